//! Drives a segment's shared heap from the command line (used by the VM suite): every
//! build of it is a version of the same segment, and a global (`heap_probe::ROOT`) holds
//! an ordinary pointer into the heap, which every version follows. Attach installs the
//! segment's heap, so `alloc` takes blocks from the heap's allocator.
//!
//! ```text
//! heap_probe [--segment S] [--reserve BYTES] [--occupy ADDR] COMMAND
//! COMMAND: status | stats | grow BYTES | alloc BYTES | put ADDR VALUE | get ADDR | deref
//!        | serve (commands on stdin, one per line, answered by "ok ..." lines)
//! ```
//!
//! `alloc` prints the new (zeroed) block's address; `put` and `get` take an address inside
//! an allocated block (hex, `0x...`). `--reserve` creates the heap if the segment has none;
//! `--occupy ADDR` maps a page at ADDR before attaching (to provoke an address conflict).

use dsu::heap::HeapRegion;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU64, Ordering};

dsu::global! {
    /// The address of the last `put`: a pointer from a global into the heap.
    #[dsu(name = "heap_probe::ROOT")]
    static ROOT: AtomicU64 = AtomicU64::new(0);
}

fn usage() -> ! {
    eprintln!(
        "usage: heap_probe [--segment S] [--reserve BYTES] [--occupy ADDR] \
         (status | stats | grow BYTES | alloc BYTES | put ADDR VALUE | get ADDR | deref | serve)"
    );
    std::process::exit(2)
}

fn number(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|_| format!("usage: {s} is not a number"))
}

/// The heap word at `addr`, if it is an aligned word inside an allocated block.
fn word(addr: u64) -> Result<*mut u64, String> {
    let heap = dsu::heap::installed().ok_or("no heap installed")?;
    let blocks = heap.allocations().map_err(|e| e.to_string())?;
    let inside = blocks
        .iter()
        .any(|b| addr >= b.ptr as u64 && addr + 8 <= (b.ptr + b.usable) as u64);
    if addr % 8 != 0 || !inside {
        return Err(format!(
            "{addr:#x} is not an aligned word inside an allocated heap block"
        ));
    }
    Ok(addr as *mut u64)
}

fn command(heap: &dsu::heap::SegmentHeap, args: &[String]) -> Result<String, String> {
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| "usage: missing argument".to_string())
    };
    let raw = dsu::heap::installed().ok_or("attach installed no heap")?;
    match args[0].as_str() {
        "status" => Ok(format!(
            "base={:#x} reserve={} size={}",
            heap.base() as usize,
            heap.reserve(),
            heap.size()
        )),
        "stats" => {
            let s = raw.check().map_err(|e| e.to_string())?;
            Ok(format!(
                "allocated={} blocks={} free={} largest={}",
                s.allocated_bytes, s.allocated_blocks, s.free_bytes, s.largest_free
            ))
        }
        "grow" => {
            let size = heap
                .grow(number(arg(1)?)? as usize)
                .map_err(|e| e.to_string())?;
            Ok(format!("size={size}"))
        }
        "alloc" => {
            let p = raw
                .allocate_zeroed(number(arg(1)?)? as usize, 8)
                .ok_or("the heap cannot grow")?;
            Ok(format!("ptr={p:p}"))
        }
        "put" => {
            let p = word(number(arg(1)?)?)?;
            // SAFETY: an aligned word of an allocated block (checked); other versions
            // access it only through atomics too.
            unsafe { AtomicU64::from_ptr(p) }.store(number(arg(2)?)?, Ordering::SeqCst);
            ROOT.store(p as u64, Ordering::SeqCst);
            Ok(format!("root={p:p}"))
        }
        "get" => {
            let p = word(number(arg(1)?)?)?;
            // SAFETY: as in `put`.
            Ok(unsafe { AtomicU64::from_ptr(p) }
                .load(Ordering::SeqCst)
                .to_string())
        }
        "deref" => {
            let p = word(ROOT.load(Ordering::SeqCst))?;
            // SAFETY: as in `put`: the pointer another version stored, checked to be a
            // word of an allocated block.
            Ok(unsafe { AtomicU64::from_ptr(p) }
                .load(Ordering::SeqCst)
                .to_string())
        }
        _ => usage(),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut segment = "heap-probe".to_string();
    let mut reserve = None;
    while let Some(a) = args.first().cloned() {
        match a.as_str() {
            "--segment" if args.len() > 1 => {
                segment = args[1].clone();
                args.drain(..2);
            }
            "--reserve" if args.len() > 1 => {
                reserve = Some(number(&args[1]).unwrap_or_else(|_| usage()) as usize);
                args.drain(..2);
            }
            "--occupy" if args.len() > 1 => {
                let addr = number(&args[1]).unwrap_or_else(|_| usage());
                // SAFETY: a new private page; MAP_FIXED_NOREPLACE replaces nothing.
                let p = unsafe {
                    libc::mmap(
                        addr as *mut libc::c_void,
                        4096,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                assert_eq!(p as u64, addr, "occupy {addr:#x}");
                args.drain(..2);
            }
            _ => break,
        }
    }
    if args.is_empty() {
        usage();
    }
    let mut attach = dsu::Attach::new(segment, "probe");
    if let Some(r) = reserve {
        attach = attach.heap(r);
    }
    let version = match attach.attach() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let Some(heap) = version.heap() else {
        eprintln!("error: the segment has no heap (pass --reserve to create one)");
        std::process::exit(1);
    };
    if args[0] == "serve" {
        println!("ready {}", version.id().unwrap_or(0));
        let _ = std::io::stdout().flush();
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<String> = line.split_whitespace().map(String::from).collect();
            if words.is_empty() {
                continue;
            }
            if words[0] == "exit" {
                println!("ok bye");
                return;
            }
            match command(heap, &words) {
                Ok(out) => println!("ok {out}"),
                Err(e) => println!("err {e}"),
            }
            let _ = std::io::stdout().flush();
        }
        return;
    }
    match command(heap, &args) {
        Ok(out) => println!("{out}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
