//! Call counters: per operation, per errno, and the invariant violations found.

/// The operations the fuzzer performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Op {
    /// open("/dev/dsu").
    Open,
    /// close.
    Close,
    /// dup.
    Dup,
    /// DSU_IOC_ATTACH.
    Attach,
    /// DSU_IOC_RESOLVE.
    Resolve,
    /// DSU_IOC_BIND.
    Bind,
    /// DSU_IOC_LIST_SEGMENTS.
    ListSegments,
    /// DSU_IOC_LIST_VARIABLES.
    ListVariables,
    /// DSU_IOC_LIST_VERSIONS.
    ListVersions,
    /// DSU_IOC_READ_VAR.
    ReadVar,
    /// DSU_IOC_DESTROY.
    Destroy,
    /// DSU_IOC_SETATTR.
    SetAttr,
    /// DSU_IOC_READY.
    Ready,
    /// DSU_IOC_GC.
    Gc,
    /// Any other ioctl number.
    RawIoctl,
    /// mmap of a handle.
    Mmap,
    /// munmap, whole or one page.
    Munmap,
    /// mremap.
    Mremap,
    /// mprotect.
    Mprotect,
    /// madvise.
    Madvise,
    /// Reads and writes of mapped pages through the kernel.
    Touch,
    /// /proc/self/mem and process_vm_readv/writev.
    ProcMem,
    /// read() of events.
    Read,
    /// poll().
    Poll,
    /// fork of a child sharing handles and mappings.
    Fork,
    /// Directory consistency checks.
    Check,
    /// DSU_IOC_HEAP.
    Heap,
    /// DSU_IOC_HEAP_GROW.
    HeapGrow,
    /// DSU_IOC_HEAP_DISCARD.
    HeapDiscard,
    /// DSU_IOC_READ_HEAP.
    ReadHeap,
    /// DSU_IOC_RESTORE.
    Restore,
    /// DSU_IOC_RESTORE_VAR.
    RestoreVar,
    /// DSU_IOC_RESTORE_HEAP.
    RestoreHeap,
    /// DSU_IOC_RESTORE_COMMIT.
    RestoreCommit,
    /// DSU_IOC_SNAPSHOT.
    Snapshot,
    /// pread, ioctls, mmap and close of a snapshot fd.
    SnapshotFd,
    /// DSU_IOC_LOCK_TOKEN.
    LockToken,
    /// DSU_IOC_LOCK_OWNER.
    LockOwner,
}

/// Number of [`Op`] variants.
pub const OPS: usize = Op::LockOwner as usize + 1;
/// Names of the operations, by index.
pub const OP_NAMES: [&str; OPS] = [
    "open",
    "close",
    "dup",
    "attach",
    "resolve",
    "bind",
    "list_segments",
    "list_variables",
    "list_versions",
    "read_var",
    "destroy",
    "setattr",
    "ready",
    "gc",
    "raw_ioctl",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "touch",
    "proc_mem",
    "read",
    "poll",
    "fork",
    "check",
    "heap",
    "heap_grow",
    "heap_discard",
    "read_heap",
    "restore",
    "restore_var",
    "restore_heap",
    "restore_commit",
    "snapshot",
    "snapshot_fd",
    "lock_token",
    "lock_owner",
];
/// The system calls each operation makes, for findings that name them.
pub const OP_SYSCALLS: [&str; OPS] = [
    "openat",
    "close",
    "dup",
    "ioctl(DSU_IOC_ATTACH)",
    "ioctl(DSU_IOC_RESOLVE)",
    "ioctl(DSU_IOC_BIND)",
    "ioctl(DSU_IOC_LIST_SEGMENTS)",
    "ioctl(DSU_IOC_LIST_VARIABLES)",
    "ioctl(DSU_IOC_LIST_VERSIONS)",
    "ioctl(DSU_IOC_READ_VAR)",
    "ioctl(DSU_IOC_DESTROY)",
    "ioctl(DSU_IOC_SETATTR)",
    "ioctl(DSU_IOC_READY)",
    "ioctl(DSU_IOC_GC)",
    "ioctl",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "read/write (pipe copies)",
    "pread/pwrite of /proc/self/mem or process_vm_readv/process_vm_writev",
    "read",
    "poll",
    "fork",
    "ioctl(DSU_IOC_LIST_SEGMENTS)",
    "ioctl(DSU_IOC_HEAP) and mmap of its window",
    "ioctl(DSU_IOC_HEAP_GROW)",
    "ioctl(DSU_IOC_HEAP_DISCARD)",
    "ioctl(DSU_IOC_READ_HEAP)",
    "ioctl(DSU_IOC_RESTORE)",
    "ioctl(DSU_IOC_RESTORE_VAR)",
    "ioctl(DSU_IOC_RESTORE_HEAP)",
    "ioctl(DSU_IOC_RESTORE_COMMIT)",
    "ioctl(DSU_IOC_SNAPSHOT)",
    "pread, ioctl, mmap or close of a snapshot fd",
    "ioctl(DSU_IOC_LOCK_TOKEN)",
    "ioctl(DSU_IOC_LOCK_OWNER)",
];
const ERRNOS: usize = 160;

/// Counters of one worker, or of a whole run once merged.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Calls per operation.
    pub calls: [u64; OPS],
    /// Successful calls per operation.
    pub ok: [u64; OPS],
    /// Failed calls per errno.
    pub errnos: [u64; ERRNOS],
    /// Invariant violations (each is a bug in the module), and missing system calls.
    pub findings: Vec<String>,
    /// Operations that answered `ENOSYS` (reported once each).
    enosys: [bool; OPS],
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            calls: [0; OPS],
            ok: [0; OPS],
            errnos: [0; ERRNOS],
            findings: Vec::new(),
            enosys: [false; OPS],
        }
    }
}

impl Stats {
    /// Counts one call of `op` that failed with `errno` (0: succeeded). `ENOSYS` is a
    /// finding, once per operation: the kernel lacks a system call the fuzzer relies on
    /// (a config option is off), so that operation tests nothing. Raw ioctls, whose random
    /// command numbers may reach code that answers `ENOSYS`, are exempt.
    pub fn count(&mut self, op: Op, errno: i32) {
        if errno == libc::ENOSYS && op != Op::RawIoctl && !self.enosys[op as usize] {
            self.enosys[op as usize] = true;
            self.finding(format!(
                "{} answered ENOSYS: the kernel lacks {} (enable its config option)",
                OP_NAMES[op as usize], OP_SYSCALLS[op as usize]
            ));
        }
        self.calls[op as usize] += 1;
        if errno == 0 {
            self.ok[op as usize] += 1;
        } else {
            self.errnos[(errno as usize).min(ERRNOS - 1)] += 1;
        }
    }

    /// Records an invariant violation (printed at once and in the summary).
    pub fn finding(&mut self, what: String) {
        eprintln!("dsu-fuzz: FINDING: {what}");
        if self.findings.len() < 100 {
            self.findings.push(what);
        }
    }

    /// All calls made.
    pub fn total_calls(&self) -> u64 {
        self.calls.iter().sum()
    }

    /// Adds another worker's counters.
    pub fn merge(&mut self, o: &Stats) {
        for i in 0..OPS {
            self.calls[i] += o.calls[i];
            self.ok[i] += o.ok[i];
        }
        for i in 0..ERRNOS {
            self.errnos[i] += o.errnos[i];
        }
        self.findings.extend(o.findings.iter().cloned());
    }

    /// A line-based text form for passing counters from a child process to the parent.
    pub fn to_wire(&self) -> String {
        let mut s = String::new();
        let nums = |v: &[u64]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        s.push_str(&format!(
            "calls {}\nok {}\nerrnos {}\n",
            nums(&self.calls),
            nums(&self.ok),
            nums(&self.errnos)
        ));
        for f in &self.findings {
            s.push_str(&format!("finding {}\n", f.replace('\n', " ")));
        }
        s
    }

    /// Parses [`Stats::to_wire`] output.
    pub fn from_wire(s: &str) -> Stats {
        let mut st = Stats::default();
        for line in s.lines() {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            let fill = |dst: &mut [u64]| {
                for (d, v) in dst.iter_mut().zip(rest.split(' ')) {
                    *d = v.parse().unwrap_or(0);
                }
            };
            match key {
                "calls" => fill(&mut st.calls),
                "ok" => fill(&mut st.ok),
                "errnos" => fill(&mut st.errnos),
                "finding" => st.findings.push(rest.to_string()),
                _ => {}
            }
        }
        st
    }

    /// The human summary: one line per operation and one of errnos.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for i in 0..OPS {
            if self.calls[i] > 0 {
                s.push_str(&format!(
                    "dsu-fuzz:   {:<15} calls={:<8} ok={}\n",
                    OP_NAMES[i], self.calls[i], self.ok[i]
                ));
            }
        }
        let errs: Vec<String> = (0..ERRNOS)
            .filter(|e| self.errnos[*e] > 0)
            .map(|e| {
                format!(
                    "{:?}={}",
                    nix::errno::Errno::from_raw(e as i32),
                    self.errnos[e]
                )
            })
            .collect();
        s.push_str(&format!("dsu-fuzz:   errnos: {}\n", errs.join(" ")));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip() {
        let mut a = Stats::default();
        a.count(Op::Bind, 0);
        a.count(Op::Bind, 22);
        a.count(Op::Check, 14);
        a.findings.push("x y".into());
        let b = Stats::from_wire(&a.to_wire());
        assert_eq!(a.calls, b.calls);
        assert_eq!(a.ok, b.ok);
        assert_eq!(a.errnos, b.errnos);
        assert_eq!(a.findings, b.findings);
        assert!(b.summary().contains("EINVAL=1"));
    }

    #[test]
    fn enosys_is_a_finding_naming_the_syscall() {
        let mut a = Stats::default();
        a.count(Op::Madvise, libc::ENOSYS);
        a.count(Op::Madvise, libc::ENOSYS);
        a.count(Op::ProcMem, libc::ENOSYS);
        a.count(Op::RawIoctl, libc::ENOSYS);
        assert_eq!(a.findings.len(), 2, "{:?}", a.findings);
        assert!(a.findings[0].contains("madvise answered ENOSYS"));
        assert!(a.findings[1].contains("process_vm_readv"));
    }
}
