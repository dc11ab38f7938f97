//! The differential test on the host (shorter than the VM suite's 100,000 commands):
//! `kv_local` against Debian's `redis-server`, reply for reply. Skipped, with a message,
//! when `redis-server` is not installed (`apt-get install redis-server`).

mod common_servers;
use common_servers::{free_port, kv_local, kv_version, start};

fn redis_server(rp: u16) -> common_servers::Proc {
    let rp_s = rp.to_string();
    start(
        "/usr/bin/redis-server",
        &[
            "--port",
            &rp_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ],
        rp,
    )
}

/// v2's commands (and v3's list representation) against redis-server.
#[test]
fn kv_v2_and_v3_agree_with_redis_server() {
    if !std::path::Path::new("/usr/bin/redis-server").exists() {
        eprintln!("SKIPPED: /usr/bin/redis-server is not installed");
        return;
    }
    let rp = free_port();
    let _redis = redis_server(rp);
    for version in [2, 3] {
        let kp = free_port();
        let _kv = kv_version(version, kp);
        let r = dsu_kv::difftest::run_for(7, 20_000, rp, kp, version)
            .unwrap_or_else(|e| panic!("kv_v{version}: {e}"));
        for cmd in ["LMOVE", "RPOPLPUSH", "SMOVE", "HINCRBY", "HLEN", "HEXISTS"] {
            assert!(
                r.per_command.get(cmd).is_some_and(|&n| n > 50),
                "{cmd}: {:?}",
                r.per_command
            );
        }
    }
}

#[test]
fn kv_agrees_with_redis_server() {
    if !std::path::Path::new("/usr/bin/redis-server").exists() {
        eprintln!("SKIPPED: /usr/bin/redis-server is not installed");
        return;
    }
    let (rp, kp) = (free_port(), free_port());
    let rp_s = rp.to_string();
    let _redis = start(
        "/usr/bin/redis-server",
        &[
            "--port",
            &rp_s,
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
        ],
        rp,
    );
    let _kv = kv_local(kp, &[]);
    for seed in [1, 2, 3] {
        let r = dsu_kv::difftest::run(seed, 20_000, rp, kp).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.commands, 20_000);
        // The generator covers every command it knows.
        assert!(r.per_command.len() >= 40, "{:?}", r.per_command);
    }
}
