/* A CPU stand-in for a GPU, behind the library's device vtable (src/device/device.h), so that the
 * stream-ordered path runs and is checked on machines without one. "Device" memory is host memory
 * the emulation tracks; a stream is a thread running its work in order, pausing a little before
 * each item so that a library reading or writing a buffer at the wrong time gets caught; capture
 * records a stream's work into a graph that can be replayed. IPC handles are offsets into an arena
 * shared by every process forked after it was made, mapped at the same address in all of them.
 * Streams live in the process that made them (make them after the harness forks). */
#ifndef TALLY_TEST_EMULATED_DEVICE_H
#define TALLY_TEST_EMULATED_DEVICE_H

#include <stddef.h>

#include "device/device.h"

struct emu_stream;
struct emu_graph;

const struct tally_device_ops *emu_device(void);

void *emu_malloc(size_t bytes);         /* device memory */
void *emu_malloc_managed(size_t bytes); /* managed memory */
void *emu_malloc_pinned(size_t bytes);  /* pinned host memory */
void emu_free(void *p);                 /* any of the three */

/* Makes alloc_device (the IPC window's allocation) fail in this process while `fail` is set. */
void emu_fail_device_allocations(int fail);
/* Makes every enqueue on a stream take `us` microseconds more of its caller's time (0: none), as a
 * caller descheduled in the middle of a call would: the stream runs ahead of the enqueueing. */
void emu_slow_enqueues(unsigned us);

/* Makes the IPC arena (before forking the ranks); 0 on success. Without it the device has no IPC. */
int emu_ipc_arena_create(size_t bytes);

struct emu_stream *emu_stream_create(void);
void emu_stream_destroy(struct emu_stream *s); /* waits for its work first */
/* A "kernel": fn(arg) runs on the stream's thread in stream order. */
void emu_launch(struct emu_stream *s, void (*fn)(void *), void *arg);
void emu_stream_synchronize(struct emu_stream *s);

/* Work enqueued on s between begin and end is recorded, not run; launching the graph enqueues it. */
void emu_capture_begin(struct emu_stream *s);
struct emu_graph *emu_capture_end(struct emu_stream *s);
void emu_graph_launch(struct emu_graph *g, struct emu_stream *s);
void emu_graph_destroy(struct emu_graph *g);

/* A gate a kernel can wait at: the stream stops there until the gate opens. */
struct emu_gate;
struct emu_gate *emu_gate_create(void);
void emu_gate_wait_on(struct emu_stream *s, struct emu_gate *g); /* enqueues the wait */
void emu_gate_open(struct emu_gate *g);
void emu_gate_destroy(struct emu_gate *g);

#endif
