/*
 * c-reporter: a coordinatord reporter module in C (wasm/ABI.md), built with
 * clang --target=wasm32 and no libc (see build.sh).
 *
 * For every job result and lease event it emits one record to the sink
 * "results" whose data is the event itself, unchanged:
 *
 *   {"records":[{"sink":"results","data":<the event>}]}
 *
 * No JSON is parsed: the host always sends one valid JSON object, so
 * wrapping it in a fixed prefix and suffix yields valid JSON. To avoid any
 * copy, coordinatord_alloc hands out a buffer preceded by the prefix (written
 * once) with room for the suffix after the event; the handler writes the
 * suffix and passes the whole to output. A call runs no loop but the
 * suffix's three bytes: the host's cancellation checks, one per loop
 * iteration, cost it nearly nothing.
 *
 * Memory: one buffer from __heap_base to the end of linear memory, grown
 * with memory.grow when an event needs more room and reused by every call.
 */

/* The exported functions carry the ABI names; build.sh exports them with
 * -Wl,--export=NAME. */
#define HOST_IMPORT(name) __attribute__((import_module("coordinatord"), import_name(name)))

typedef unsigned int u32;
typedef unsigned char u8;

HOST_IMPORT("output") void host_output(const u8 *ptr, u32 len);
HOST_IMPORT("log") void host_log(int level, const u8 *ptr, u32 len);
HOST_IMPORT("fail") void host_fail(const u8 *ptr, u32 len);

extern u8 __heap_base; /* first free byte, from wasm-ld */

static const char prefix[] = "{\"records\":[{\"sink\":\"results\",\"data\":";
static const char suffix[] = "}]}";
#define PREFIX_LEN (sizeof prefix - 1)
#define SUFFIX_LEN (sizeof suffix - 1)
#define PAGE 65536u

static u8 *event; /* where the host writes the event: __heap_base + PREFIX_LEN */

static void copy(u8 *dst, const char *src, u32 n) {
	for (u32 i = 0; i < n; i++)
		dst[i] = (u8)src[i];
}

/* The version marker: never called. */
void coordinatord_abi_v1(void) {}

/* The buffer for an event of size bytes, with room for the prefix before it
 * and the suffix after it; 0 if memory cannot grow enough. */
u8 *coordinatord_alloc(int size) {
	if (size < 0)
		return 0;
	u32 base = (u32)&__heap_base;
	u32 need = base + PREFIX_LEN + (u32)size + SUFFIX_LEN;
	if (need < base) /* overflow */
		return 0;
	u32 have = (u32)__builtin_wasm_memory_size(0) * PAGE;
	if (need > have) {
		u32 pages = (need - have + PAGE - 1) / PAGE;
		if (__builtin_wasm_memory_grow(0, pages) == (unsigned long)-1)
			return 0;
	}
	event = (u8 *)base + PREFIX_LEN;
	/* The buffer never moves (memory.grow keeps addresses) and the host
	 * writes only the event, so the prefix is written once. */
	static int prefixed;
	if (!prefixed) {
		copy(event - PREFIX_LEN, prefix, PREFIX_LEN);
		prefixed = 1;
	}
	return event;
}

static int fail(const char *msg, u32 n) {
	host_fail((const u8 *)msg, n);
	return 1;
}

static int report(u8 *ptr, u32 len) {
	if (ptr != event || ptr == 0)
		return fail("event is not in the buffer coordinatord_alloc returned", 55);
	/* skip leading whitespace; the event must be a JSON object */
	u32 i = 0;
	while (i < len && (ptr[i] == ' ' || ptr[i] == '\t' || ptr[i] == '\n' || ptr[i] == '\r'))
		i++;
	if (i == len || ptr[i] != '{')
		return fail("event is not a JSON object", 26);
	copy(ptr + len, suffix, SUFFIX_LEN);
	host_output(ptr - PREFIX_LEN, PREFIX_LEN + len + SUFFIX_LEN);
	return 0;
}

int coordinatord_on_job_result(u8 *ptr, u32 len) { return report(ptr, len); }

int coordinatord_on_lease_event(u8 *ptr, u32 len) { return report(ptr, len); }
