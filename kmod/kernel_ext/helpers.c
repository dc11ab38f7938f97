// SPDX-License-Identifier: GPL-2.0-only
/*
 * C helpers for kernel_ext: inline functions of headers that the kernel's Rust bindings
 * (rust/bindings/bindings_helper.h in 6.12) do not include, so that Rust cannot call or
 * inline them. Each is a one-line wrapper; kernel_ext/ns.rs and kernel_ext/shmem.rs are
 * the only callers.
 */
#include <linux/anon_inodes.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/ipc_namespace.h>
#include <linux/memcontrol.h>
#include <linux/mm.h>
#include <linux/nsproxy.h>
#include <linux/pagemap.h>
#include <linux/pagevec.h>
#include <linux/random.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>

/* Called from Rust only (kernel_ext/ns.rs declares them); prototypes for -Wmissing-prototypes. */
struct ipc_namespace *dsu_get_current_ipc_ns(void);
void dsu_put_ipc_ns(struct ipc_namespace *ns);
struct file *dsu_get_file(struct file *file);
loff_t dsu_i_size_read(const struct inode *inode);
unsigned long dsu_task_size(void);
void dsu_lock_page(struct page *page);
void dsu_unlock_page(struct page *page);
bool dsu_page_has_mapping(struct page *page);
bool dsu_page_maybe_dma_pinned(struct page *page);
void dsu_copy_page(struct page *to, struct page *from);
struct page *dsu_alloc_page_charged(struct mem_cgroup *memcg);
struct mem_cgroup *dsu_current_memcg(void);
void dsu_memcg_put(struct mem_cgroup *memcg);
bool dsu_fatal_signal_pending(void);
struct file *dsu_anon_file(const char *name, const struct file_operations *fops, void *priv);
struct file *dsu_anon_inode_file(const char *name, const struct file_operations *fops);
void dsu_file_set_mapping(struct file *file, struct address_space *mapping);
void dsu_lock_barrier(struct address_space *mapping, pgoff_t start, pgoff_t end,
		      void (*pinned)(void *ctx, pgoff_t index, struct page *page), void *ctx);

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

/* Locks a page (its folio): lock_page is an inline. */
void dsu_lock_page(struct page *page)
{
	lock_page(page);
}

/* Unlocks a page locked by dsu_lock_page. */
void dsu_unlock_page(struct page *page)
{
	unlock_page(page);
}

/* Whether a locked page is still in its file (not truncated or punched out). */
bool dsu_page_has_mapping(struct page *page)
{
	return READ_ONCE(page_folio(page)->mapping) != NULL;
}

/* Whether the page may be pinned for DMA (FOLL_PIN, e.g. O_DIRECT, io_uring buffers). */
bool dsu_page_maybe_dma_pinned(struct page *page)
{
	return folio_maybe_dma_pinned(page_folio(page));
}

/* Copies a whole page (copy_highpage is an inline). */
void dsu_copy_page(struct page *to, struct page *from)
{
	copy_highpage(to, from);
}

/*
 * A page charged to `memcg` (the snapshot's caller's) rather than to the current task,
 * allowed to fail without invoking the OOM killer. NULL memcg: the current task's.
 */
struct page *dsu_alloc_page_charged(struct mem_cgroup *memcg)
{
	struct mem_cgroup *old = set_active_memcg(memcg);
	struct page *page = alloc_page(GFP_HIGHUSER | __GFP_ACCOUNT | __GFP_RETRY_MAYFAIL |
				       __GFP_NOWARN);

	set_active_memcg(old);
	return page;
}

/* The current task's memory cgroup, with a reference (NULL without memcg). */
struct mem_cgroup *dsu_current_memcg(void)
{
	return get_mem_cgroup_from_mm(current->mm);
}

/* Drops a reference from dsu_current_memcg (NULL is ignored). */
void dsu_memcg_put(struct mem_cgroup *memcg)
{
	mem_cgroup_put(memcg);
}

/* fatal_signal_pending(current) is an inline. */
bool dsu_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/* A read-only anon-inode file with `priv` as private data, readable with pread (as KVM's stats fd). */
struct file *dsu_anon_file(const char *name, const struct file_operations *fops, void *priv)
{
	struct file *file = anon_inode_getfile(name, fops, priv, O_RDONLY);

	if (!IS_ERR(file))
		file->f_mode |= FMODE_PREAD;
	return file;
}

/* A file on an anon inode of its own (so an address_space of its own, as DRM's). */
struct file *dsu_anon_inode_file(const char *name, const struct file_operations *fops)
{
	return anon_inode_create_getfile(name, fops, NULL, O_RDWR, NULL);
}

/* Points a file at another address_space before its first mmap (DRM's drm_open idiom). */
void dsu_file_set_mapping(struct file *file, struct address_space *mapping)
{
	WRITE_ONCE(file->f_mapping, mapping);
}

/*
 * Locks and unlocks every folio of `mapping` in [start, end], so that a fault holding one
 * locked (page_mkwrite to PTE install) has finished; calls `pinned` for each one that may
 * be pinned for DMA, with the folio locked.
 */
void dsu_lock_barrier(struct address_space *mapping, pgoff_t start, pgoff_t end,
		      void (*pinned)(void *ctx, pgoff_t index, struct page *page), void *ctx)
{
	struct folio_batch fbatch;
	unsigned int i;

	folio_batch_init(&fbatch);
	while (filemap_get_folios(mapping, &start, end, &fbatch)) {
		for (i = 0; i < folio_batch_count(&fbatch); i++) {
			struct folio *folio = fbatch.folios[i];

			folio_lock(folio);
			if (folio->mapping == mapping && folio_maybe_dma_pinned(folio))
				pinned(ctx, folio->index, folio_page(folio, 0));
			folio_unlock(folio);
		}
		folio_batch_release(&fbatch);
		cond_resched();
	}
}

/* Takes an mm_count reference on the caller's mm (NULL for a kernel thread). */
struct mm_struct *dsu_current_mm_grab(void);
struct mm_struct *dsu_current_mm_grab(void)
{
	struct mm_struct *mm = current->mm;

	if (mm)
		mmgrab(mm);
	return mm;
}

void dsu_mmgrab(struct mm_struct *mm);
void dsu_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void dsu_mmdrop(struct mm_struct *mm);
void dsu_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

/* Whether the mm's process is still using it (exit and exec drop mm_users to 0). */
bool dsu_mm_alive(struct mm_struct *mm);
bool dsu_mm_alive(struct mm_struct *mm)
{
	return atomic_read(&mm->mm_users) > 0;
}

/*
 * The file mapping at `addr` in the caller's mm, if MAP_SHARED: its address_space (for
 * comparison only) and the page offset of `addr` in it. -EFAULT if there is none.
 */
int dsu_current_shared_region(unsigned long addr, struct address_space **mapping, pgoff_t *pgoff);
int dsu_current_shared_region(unsigned long addr, struct address_space **mapping, pgoff_t *pgoff)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	int ret = -EFAULT;

	if (!mm)
		return -EFAULT;
	if (mmap_read_lock_killable(mm))
		return -EINTR;
	vma = vma_lookup(mm, addr);
	if (vma && vma->vm_file && (vma->vm_flags & VM_SHARED)) {
		*mapping = vma->vm_file->f_mapping;
		*pgoff = vma->vm_pgoff + ((addr - vma->vm_start) >> PAGE_SHIFT);
		ret = 0;
	}
	mmap_read_unlock(mm);
	return ret;
}

/*
 * Whether `mm` has a MAP_SHARED mapping of pages [first, end) of `mapping` (compared by
 * address): 1 or 0, -ESRCH if its process has exited or execed, -EINTR if killed.
 */
int dsu_mm_maps_shared(struct mm_struct *mm, struct address_space *mapping, pgoff_t first,
		       pgoff_t end);
int dsu_mm_maps_shared(struct mm_struct *mm, struct address_space *mapping, pgoff_t first,
		       pgoff_t end)
{
	struct vm_area_struct *vma;
	int found = 0;

	if (!mmget_not_zero(mm))
		return -ESRCH;
	if (mmap_read_lock_killable(mm)) {
		mmput(mm);
		return -EINTR;
	}
	{
		VMA_ITERATOR(vmi, mm, 0);

		for_each_vma(vmi, vma) {
			pgoff_t vfirst = vma->vm_pgoff, vend = vfirst + vma_pages(vma);

			if (vma->vm_file && vma->vm_file->f_mapping == mapping &&
			    (vma->vm_flags & VM_SHARED) && vfirst < end && first < vend) {
				found = 1;
				break;
			}
		}
	}
	mmap_read_unlock(mm);
	mmput(mm);
	return found;
}

u32 dsu_random_u32(void);
u32 dsu_random_u32(void)
{
	return get_random_u32();
}

/*
 * Lockdep classes of the module's private tmpfs, apart from every other tmpfs's: its
 * files are never written through write(2) (they have no fd outside the module), so the
 * order "i_rwsem of a user's tmpfs file -> mmap_lock" (a page fault in write) and the
 * module's "mmap_lock -> segment mutex -> heap growth mutex -> fallocate of a heap file"
 * involve different inodes, which lockdep would otherwise not tell apart.
 */
static struct lock_class_key dsu_shmem_writers_keys[SB_FREEZE_LEVELS];
static struct lock_class_key dsu_shmem_i_rwsem_key;

void dsu_shmem_sb_set_class(struct vfsmount *mnt);
void dsu_shmem_sb_set_class(struct vfsmount *mnt)
{
	int i;

	for (i = 0; i < SB_FREEZE_LEVELS; i++)
		lockdep_set_class(&mnt->mnt_sb->s_writers.rw_sem[i], &dsu_shmem_writers_keys[i]);
}

void dsu_shmem_file_set_class(struct file *file);
void dsu_shmem_file_set_class(struct file *file)
{
	lockdep_set_class(&file_inode(file)->i_rwsem, &dsu_shmem_i_rwsem_key);
}
