// Finds a key named twice in one JSON object. JSON.parse keeps the last one
// silently, so `{"services": {"users": ..., "users": ...}}` would lose a service unseen.

/**
 * The path of the first key that appears twice in the same object
 * (`services.users`), or undefined when there is none. `text` must already
 * be valid JSON (JSON.parse accepted it): the scan only tracks strings,
 * nesting and which strings are keys.
 */
export function findDuplicateKey (text: string): string | undefined {
  /** One open container: its keys so far (undefined for an array), and its path. */
  const stack: Array<{ keys: Set<string> | undefined, path: string, pendingKey: boolean }> = []
  let lastKey = ''
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i)
    const top = stack[stack.length - 1]
    if (ch === 34 /* " */) {
      let j = i + 1
      while (text.charCodeAt(j) !== 34) j += text.charCodeAt(j) === 92 /* \ */ ? 2 : 1
      if (top?.keys !== undefined && top.pendingKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string
        const path = top.path === '' ? key : `${top.path}.${key}`
        if (top.keys.has(key)) return path
        top.keys.add(key)
        top.pendingKey = false
        lastKey = path
      }
      i = j
    } else if (ch === 123 /* { */ || ch === 91 /* [ */) {
      const path = top === undefined ? '' : top.keys === undefined ? `${top.path}[]` : lastKey
      stack.push({ keys: ch === 123 ? new Set() : undefined, path, pendingKey: ch === 123 })
    } else if (ch === 125 /* } */ || ch === 93 /* ] */) {
      stack.pop()
    } else if (ch === 44 /* , */ && top?.keys !== undefined) {
      top.pendingKey = true
    }
  }
  return undefined
}
