// Size limits of the public listener, shared by both engines so they refuse
// the same requests: the fast path checks them itself, node:http is given them.

/** Longest request head the gateway takes or sends upstream (node:http's default, 16 KiB): over it, 431. */
export const MAX_HEAD = 16 * 1024

/** Most header lines in a request head: over it, 431 (node:http would silently keep only the first 2000). */
export const MAX_HEADER_LINES = 256

/** Informational (1xx) answers relayed per exchange at most; one more is an upstream error (a 103 flood cannot grow memory). */
export const MAX_INFORMATIONAL = 16
