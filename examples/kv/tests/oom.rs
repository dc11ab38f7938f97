//! The memory limit (`--maxmemory`, Redis's `maxmemory`): past it writes get Redis's
//! `-OOM`, reads keep working and nothing is lost; DEL gives memory back.

mod common_servers;
use common_servers::{free_port, kv_local};
use dsu_kv::difftest::{Conn, Step};
use dsu_kv::resp::Reply;

fn call(c: &mut Conn, args: &[&[u8]]) -> Reply {
    c.call(&Step {
        args: args.iter().map(|a| a.to_vec()).collect(),
        inline: false,
    })
    .unwrap()
}

fn used_memory(c: &mut Conn) -> usize {
    let Reply::Bulk(Some(info)) = call(c, &[b"INFO"]) else {
        panic!("INFO")
    };
    let info = String::from_utf8(info).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

#[test]
fn writes_refused_past_the_limit_reads_kept_del_frees() {
    let port = free_port();
    let _kv = kv_local(port, &["--maxmemory", "4000000"]);
    let mut c = Conn::connect(port).unwrap();
    let value = vec![b'v'; 1000];
    let mut written = 0;
    loop {
        let key = format!("key:{written}");
        match call(&mut c, &[b"SET", key.as_bytes(), &value]) {
            Reply::Simple(ok) if ok == "OK" => written += 1,
            Reply::Error(e) => {
                assert_eq!(e, OOM);
                break;
            }
            r => panic!("SET: {r:?}"),
        }
        assert!(written < 10_000, "no limit");
    }
    assert!(written > 1000, "only {written} keys fit in 4 MB");
    // Other writes are refused too; a value larger than the whole limit as well.
    assert_eq!(
        call(&mut c, &[b"LPUSH", b"l", b"x"]),
        Reply::Error(OOM.into())
    );
    assert_eq!(
        call(&mut c, &[b"SADD", b"s", b"x"]),
        Reply::Error(OOM.into())
    );
    // Reads work and every key is there.
    for i in 0..written {
        let key = format!("key:{i}");
        assert_eq!(
            call(&mut c, &[b"GET", key.as_bytes()]),
            Reply::Bulk(Some(value.clone())),
            "{key}"
        );
    }
    assert_eq!(call(&mut c, &[b"DBSIZE"]), Reply::Integer(written as i64));
    // DEL gives memory back, and writes work again.
    let before = used_memory(&mut c);
    for i in 0..written / 2 {
        let key = format!("key:{i}");
        assert_eq!(call(&mut c, &[b"DEL", key.as_bytes()]), Reply::Integer(1));
    }
    let after = used_memory(&mut c);
    assert!(
        after < before - written / 2 * 1000,
        "used_memory {before} -> {after} after deleting {} keys of 1000 bytes",
        written / 2
    );
    assert_eq!(call(&mut c, &[b"LPUSH", b"l", b"x"]), Reply::Integer(1));
    // One value larger than what is left: the allocation fails, the reply is -OOM, and
    // the key keeps its old value.
    let big = vec![b'b'; 8_000_000];
    assert_eq!(
        call(&mut c, &[b"SET", b"key:0", b"small"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        call(&mut c, &[b"SET", b"key:0", &big]),
        Reply::Error(OOM.into())
    );
    assert_eq!(
        call(&mut c, &[b"GET", b"key:0"]),
        Reply::Bulk(Some(b"small".to_vec()))
    );
    assert_eq!(
        call(&mut c, &[b"APPEND", b"key:0", &big]),
        Reply::Error(OOM.into())
    );
    assert_eq!(call(&mut c, &[b"STRLEN", b"key:0"]), Reply::Integer(5));
}
