//! `kv_difftest`: sends a seeded random command sequence to a running `redis-server` and
//! a running kv server and compares every reply ([`dsu_kv::difftest`]). Exits 0 when every
//! reply agreed (under the allowed differences it prints), 1 at the first difference.

use clap::Parser;

/// Compares the kv server with redis-server, reply for reply.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seed of the command sequence.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Commands to send.
    #[arg(long, default_value_t = 100_000)]
    commands: u64,
    /// redis-server's port on 127.0.0.1 (both servers must be empty and unshared).
    #[arg(long)]
    redis_port: u16,
    /// The kv server's port on 127.0.0.1.
    #[arg(long)]
    kv_port: u16,
    /// The kv server's version: from 2 on, v2's commands are sent too.
    #[arg(long, default_value_t = 1)]
    kv_version: u32,
}

fn main() {
    let a = Args::parse();
    for (rule, why) in dsu_kv::difftest::ALLOWED_DIFFERENCES {
        println!("allowed difference: {rule} ({why})");
    }
    match dsu_kv::difftest::run_for(a.seed, a.commands, a.redis_port, a.kv_port, a.kv_version) {
        Ok(r) => {
            println!(
                "differential: seed {}: {} commands, all replies agree ({} errors on both sides, {} compared by an allowed rule)",
                a.seed, r.commands, r.errors, r.by_rule
            );
            let per: Vec<String> = r
                .per_command
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!("differential: per command: {}", per.join(" "));
        }
        Err(e) => {
            eprintln!("differential: FAILED: {e}");
            std::process::exit(1);
        }
    }
}
