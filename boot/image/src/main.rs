//! `make image`'s tool (no test code in it):
//!
//!   bulkhead-image check <elf>           the boot-protocol checks; prints the image's size
//!   bulkhead-image make-pvh <elf> <out>  a copy without the multiboot header

use std::process::ExitCode;

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("check") if args.len() == 2 => read(&args[1])
            .and_then(|b| bulkhead_image::check(&b))
            .map(|r| println!("{}: ok; {r}", args[1])),
        Some("make-pvh") if args.len() == 3 => read(&args[1])
            .and_then(|b| bulkhead_image::pvh_variant(&b))
            .and_then(|v| std::fs::write(&args[2], v).map_err(|e| format!("{}: {e}", args[2]))),
        _ => Err("usage: bulkhead-image check <elf> | make-pvh <elf> <out>".into()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead-image: {e}");
            ExitCode::FAILURE
        }
    }
}
