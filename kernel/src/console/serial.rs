//! 16550 UART on COM1, polled, 115200 8N1.

use crate::arch::{inb, outb, outsb};

/// The transmit FIFO: what may be written after one "transmitter empty".
pub const FIFO: usize = 16;

pub struct Uart {
    port: u16,
}

impl Uart {
    /// The UART if one answers at `port`: the scratch register must hold what is written
    /// (a Xen PVH domain has no UART and reads 0xff everywhere).
    pub fn probe(port: u16) -> Option<Uart> {
        outb(port + 7, 0x5a);
        if inb(port + 7) != 0x5a {
            return None;
        }
        outb(port + 7, 0xa5);
        if inb(port + 7) != 0xa5 {
            return None;
        }
        outb(port + 1, 0x00); // no interrupts
        outb(port + 3, 0x80); // DLAB
        outb(port, 0x01); // divisor 1 = 115200
        outb(port + 1, 0x00);
        outb(port + 3, 0x03); // 8N1
        outb(port + 2, 0xc7); // FIFO on, cleared
        outb(port + 4, 0x03); // DTR, RTS
        Some(Uart { port })
    }

    /// Write `bytes`, a FIFO's worth at a time once the transmitter is empty.
    pub fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(FIFO) {
            // Bounded wait for the transmitter: a stuck UART must not hang the kernel;
            // the chunk is then dropped.
            for _ in 0..100_000 {
                if inb(self.port + 5) & 0x20 != 0 {
                    outsb(self.port, chunk);
                    break;
                }
                core::hint::spin_loop();
            }
        }
    }
}
