//! The dsuctl binary as a user meets it, without the kernel module: names are checked
//! before the device is opened, hints name the device used, `--version`, the generated
//! man pages and completions, and `make install` of them.

use std::path::Path;
use std::process::{Command, Output};

fn dsuctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dsuctl"))
        .args(args)
        .output()
        .expect("run dsuctl")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const NO_DEVICE: &str = "/nonexistent/dsu-test-device";

#[test]
fn bad_names_are_reported_before_the_device_is_opened() {
    for args in [
        &["show", "bad/name"][..],
        &["create", "bad/name"],
        &["chmod", "bad/name", "0600"],
        &["chown", "bad/name", "0"],
        &["destroy", "bad/name"],
        &["watch", "bad/name"],
        &["dump", "bad/name", "x"],
        &["save", "bad/name", "/tmp/x.dsusnap"],
        &["restore", "/tmp/x.dsusnap", "--name", "bad/name"],
    ] {
        for device in [None, Some(NO_DEVICE)] {
            let mut a = args.to_vec();
            if let Some(d) = device {
                a.extend(["--device", d]);
            }
            let o = dsuctl(&a);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{a:?}: {e}");
            assert!(
                e.starts_with("dsuctl: invalid segment name \"bad/name\""),
                "{a:?}: {e}"
            );
        }
    }
    let o = dsuctl(&["dump", "app", "", "--device", NO_DEVICE]);
    assert!(
        stderr(&o).starts_with("dsuctl: invalid variable name"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_missing_device_is_named_as_given() {
    let o = dsuctl(&["list", "--device", NO_DEVICE]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains(NO_DEVICE), "{e}");
    assert!(
        !e.contains("/dev/dsu is missing") && !e.contains("insmod"),
        "{e}"
    );
    if !Path::new("/dev/dsu").exists() {
        let e = stderr(&dsuctl(&["list"]));
        assert!(e.contains("/dev/dsu does not exist"), "{e}");
        assert!(e.contains("modprobe dsu"), "{e}");
    }
}

#[test]
fn version_and_help() {
    let o = dsuctl(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        format!("dsuctl {}\n", env!("CARGO_PKG_VERSION"))
    );
    let help = stdout(&dsuctl(&["--help"]));
    for cmd in [
        "chmod", "chown", "gc", "--device", "run", "upgrade", "save", "restore", "inspect",
    ] {
        assert!(help.contains(cmd), "--help lists {cmd}: {help}");
    }
    assert!(!help.contains("generate"), "generate stays hidden: {help}");
}

#[test]
fn man_pages_and_completions() {
    let dir = std::env::temp_dir().join(format!("dsuctl-man-{}", std::process::id()));
    let o = dsuctl(&["generate", "man", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "dsuctl-check.1",
            "dsuctl-chmod.1",
            "dsuctl-chown.1",
            "dsuctl-create.1",
            "dsuctl-destroy.1",
            "dsuctl-dump.1",
            "dsuctl-gc.1",
            "dsuctl-inspect.1",
            "dsuctl-list.1",
            "dsuctl-restore.1",
            "dsuctl-run.1",
            "dsuctl-save.1",
            "dsuctl-show.1",
            "dsuctl-upgrade.1",
            "dsuctl-watch.1",
            "dsuctl.1"
        ]
    );
    let main = std::fs::read_to_string(dir.join("dsuctl.1")).unwrap();
    assert!(main.contains(".TH dsuctl 1"), "{main}");
    assert!(main.contains("chown"), "{main}");
    let save = std::fs::read_to_string(dir.join("dsuctl-save.1")).unwrap();
    for text in ["\\-\\-every", "\\-\\-keep", "dsusnap", "fsync"] {
        assert!(save.contains(text), "dsuctl-save.1 has {text}: {save}");
    }
    let run = std::fs::read_to_string(dir.join("dsuctl-run.1")).unwrap();
    for text in ["LISTEN_FDS", "READY=1", "\\-\\-ready\\-timeout", "SIGUSR2"] {
        assert!(run.contains(text), "dsuctl-run.1 has {text}: {run}");
    }
    std::fs::remove_dir_all(&dir).unwrap();

    for (shell, marker) in [
        ("bash", "complete -F _dsuctl"),
        ("zsh", "#compdef dsuctl"),
        ("fish", "complete -c dsuctl"),
    ] {
        let o = dsuctl(&["generate", "completions", shell]);
        let script = stdout(&o);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("chmod") && script.contains("chown"),
            "{shell}"
        );
    }
    assert_eq!(
        dsuctl(&["generate", "completions", "tcsh"]).status.code(),
        Some(2)
    );
}

/// `make install` from the source tree puts the binary, the man pages and the completions
/// under DESTDIR/PREFIX (the Makefile is not part of the published crate).
#[test]
fn make_install_places_everything() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if !root.join("Makefile").exists() || !root.join("dkms.conf").exists() {
        eprintln!("not in the dsu source tree: make install not checked");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("dsuctl-install-{}", std::process::id()));
    let bin = Path::new(env!("CARGO_BIN_EXE_dsuctl"));
    let o = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(&root)
        .arg("generated")
        .arg("install-bin")
        .arg("install-man")
        .arg("install-completions")
        .arg(format!("RELEASE={}", bin.parent().unwrap().display()))
        .arg(format!("GEN={}", tmp.join("gen").display()))
        .arg(format!("DESTDIR={}", tmp.join("root").display()))
        .arg("PREFIX=/usr")
        .output()
        .expect("run make");
    assert!(o.status.success(), "make install: {}", stderr(&o));
    for f in [
        "usr/bin/dsuctl",
        "usr/share/man/man1/dsuctl.1",
        "usr/share/man/man1/dsuctl-chown.1",
        "usr/share/bash-completion/completions/dsuctl",
        "usr/share/zsh/site-functions/_dsuctl",
        "usr/share/fish/vendor_completions.d/dsuctl.fish",
    ] {
        let p = tmp.join("root").join(f);
        assert!(p.is_file(), "make install did not install {f}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn inspect_needs_no_module_and_refuses_a_file_that_is_not_a_snapshot() {
    let dir = std::env::temp_dir().join(format!("dsuctl-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("not-a-snapshot");
    std::fs::write(&file, b"hello").unwrap();
    let o = dsuctl(&["inspect", file.to_str().unwrap(), "--device", NO_DEVICE]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("it is not a dsu snapshot"), "{e}");
    assert!(
        !e.contains(NO_DEVICE),
        "inspect must not open the device: {e}"
    );
    let o = dsuctl(&["inspect", dir.join("missing").to_str().unwrap()]);
    assert!(stderr(&o).contains("opening snapshot"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_every_wants_a_directory_and_keep_wants_every() {
    let o = dsuctl(&["save", "app", "/tmp/x", "--keep", "3"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = dsuctl(&["save", "app", "/tmp/x", "--every", "1", "--keep", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
