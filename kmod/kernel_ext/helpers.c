// SPDX-License-Identifier: GPL-2.0-only
/*
 * C helpers for kernel_ext: inline functions of headers that the kernel's Rust bindings
 * (rust/bindings/bindings_helper.h in 6.12) do not include, so that Rust cannot call or
 * inline them. Each is a one-line wrapper; kernel_ext/ns.rs and kernel_ext/shmem.rs are
 * the only callers.
 */
#include <linux/fs.h>
#include <linux/ipc_namespace.h>
#include <linux/mm.h>
#include <linux/nsproxy.h>
#include <linux/sched.h>

/* Called from Rust only (kernel_ext/ns.rs declares them); prototypes for -Wmissing-prototypes. */
struct ipc_namespace *dsu_get_current_ipc_ns(void);
void dsu_put_ipc_ns(struct ipc_namespace *ns);
struct file *dsu_get_file(struct file *file);
loff_t dsu_i_size_read(const struct inode *inode);
unsigned long dsu_task_size(void);

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

/* Takes a reference to an open file (get_file is an inline). */
struct file *dsu_get_file(struct file *file)
{
	return get_file(file);
}

/* An inode's size (i_size_read is an inline: an acquire load on 64-bit). */
loff_t dsu_i_size_read(const struct inode *inode)
{
	return i_size_read(inode);
}

/* One past the highest user address of the current task (TASK_SIZE depends on it). */
unsigned long dsu_task_size(void)
{
	return TASK_SIZE;
}
