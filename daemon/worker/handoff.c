/*
 * handoff.c: how the worker gets the table and gives it back.
 *
 * With a keeper (the normal case) the keeper owns the segment and hands its
 * descriptor over the control socket (daemon/keeper/, protocol in
 * daemon/common/proto.h). Without one (--standalone) the worker creates or
 * opens the segment itself and writes the owner record: the mode of the core
 * issue and of unit-level tests.
 *
 * The owner record is written under owner_seq (a sequence lock for readers
 * such as heirloomctl); the epoch moves by one on every change of owner.
 */
#include "worker.h"

#include "heirloom/heirloom.h"
#include "util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>


void
hl_w_set_owner(struct hl_shm_header *h, uint32_t role, uint32_t pid, uint64_t start)
{
	atomic_fetch_add_explicit(&h->owner_seq, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&h->owner_role, role, memory_order_relaxed);
	atomic_store_explicit(&h->owner_pid, pid, memory_order_relaxed);
	atomic_store_explicit(&h->owner_start, start, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->owner_epoch, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->owner_seq, 1, memory_order_release);
}


int
hl_w_acquire_standalone(struct hl_worker *w)
{
	int fd = -1, rc;
	struct hl_layout_params p = w->opt.create;
	if (w->opt.shards)
		p.shards = w->opt.shards;
	rc = hl__layout_defaults(&p);
	if (rc) {
		hl_w_log("invalid capacities: %s", hl_strerror(rc));
		return rc;
	}
	rc = hl__seg_create(w->opt.name, &p, w->opt.mode ? w->opt.mode : 0660, (gid_t)-1, &fd);
	if (rc == 0) {
		hl_w_log("created segment /heirloom.%s (%u keys, %u observers, %u endpoints, %u shards)",
		         w->opt.name, p.max_keys, p.max_observers, p.max_endpoints, p.shards);
	} else if (rc == -EEXIST) {
		rc = hl__seg_open_fd(w->opt.name, 1, &fd);
		if (rc)
			return rc;
	} else {
		return rc;
	}
	rc = hl__seg_map_rw(fd, &w->seg);
	if (rc) {
		close(fd);
		return rc;
	}
	struct hl_shm_header *h = w->seg.h;
	uint32_t role = atomic_load(&h->owner_role);
	uint32_t pid = atomic_load(&h->owner_pid);
	if (role == HL_ROLE_WORKER && pid != (uint32_t)getpid() &&
	    hl__proc_alive((int)pid, atomic_load(&h->owner_start))) {
		hl_w_log("segment is served by worker pid %u already", pid);
		hl__seg_unmap(&w->seg);
		close(fd);
		return -EBUSY;
	}
	if (w->opt.shards && w->opt.shards != h->shards)
		hl_w_log("segment has %u shards; --shards %u applies only when creating", h->shards,
		         w->opt.shards);
	hl_w_set_owner(h, HL_ROLE_WORKER, (uint32_t)getpid(), hl__proc_start_time(getpid()));
	w->epoch = atomic_load(&h->owner_epoch);
	return 0;
}

int
hl_w_acquire(struct hl_worker *w)
{
	/* The keeper path lands with the crash-surviving issue. */
	return hl_w_acquire_standalone(w);
}

void
hl_w_release(struct hl_worker *w, int clean)
{
	(void)clean;
	hl_w_set_owner(w->seg.h, HL_ROLE_NONE, 0, 0);
}
