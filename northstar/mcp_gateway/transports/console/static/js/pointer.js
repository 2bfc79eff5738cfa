// JSON pointers (RFC 6901): the API names each problem of a definition by one; the editor
// shows it beside the field whose pointer is the longest prefix of it.
export function segments(pointer) {
  if (!pointer) return [];
  return pointer.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

export function isPrefix(prefix, full) {
  const p = segments(prefix), f = segments(full);
  return p.length <= f.length && p.every((s, i) => s === f[i]);
}

/** The best field for a problem: the longest pointer among `fields` that is a prefix of `path`. */
export function fieldFor(path, fields) {
  let best = null;
  for (const f of fields) {
    if (f && isPrefix(f, path) && (best === null || segments(f).length > segments(best).length)) best = f;
  }
  return best;
}
