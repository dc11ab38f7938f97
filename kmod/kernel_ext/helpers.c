// SPDX-License-Identifier: GPL-2.0-only
/*
 * C helpers for kernel_ext: inline functions of headers that the kernel's Rust bindings
 * (rust/bindings/bindings_helper.h in 6.12) do not include, so that Rust cannot call or
 * inline them. Each is a one-line wrapper; kernel_ext/ns.rs is the only caller.
 */
#include <linux/ipc_namespace.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>

/* Called from Rust only (kernel_ext/ns.rs declares them); prototypes for -Wmissing-prototypes. */
struct ipc_namespace *dsu_get_current_ipc_ns(void);
void dsu_put_ipc_ns(struct ipc_namespace *ns);

/* The current task's IPC namespace, with a reference (get_ipc_ns is an inline). */
struct ipc_namespace *dsu_get_current_ipc_ns(void)
{
	return get_ipc_ns(current->nsproxy->ipc_ns);
}

/* Drops a reference taken by dsu_get_current_ipc_ns. */
void dsu_put_ipc_ns(struct ipc_namespace *ns)
{
	put_ipc_ns(ns);
}
