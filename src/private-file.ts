/**
 * Files the CLI writes for the user (audit exports, plans): owner-only (0600) whatever the file was before.
 * The content goes to a new temporary file in the same folder, created 0600, flushed, then renamed over the
 * destination, so an existing 0644 file is replaced (not rewritten in place with its old mode) and a reader
 * never sees a half-written file.
 */
import * as fs from 'fs';
import * as path from 'path';

export function writePrivateFile(file: string, data: string | Uint8Array): void {
  const abs = path.resolve(file);
  const tmp = path.join(
    path.dirname(abs),
    `.${path.basename(abs)}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`,
  );
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, abs);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}
