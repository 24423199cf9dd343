// The app record of a migrated connection: what the stream held on either side of the app (bytes read from
// the engine but not by the app, bytes written by the app but not into the engine) and the app's userData.
// It is the payload of the snapshot's "app" layer on the channel and in the lane's record.
import { MigrationError } from './errors.js';

/**
 * The app record: [u32 migrations so far][u32 unread length][unread bytes][u32 unwritten length][unwritten
 * bytes][userData]. Unread bytes are what the source's stream had taken from the engine but the app had not
 * read yet; unwritten bytes what the app had written but had not reached the engine (Connection._divertWrites):
 * the target writes them before the app resumes.
 */
export function encodeApp(migrations: number, unread: Uint8Array, unwritten: Uint8Array, userData: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + unread.length + unwritten.length + userData.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, migrations >>> 0, true);
  v.setUint32(4, unread.length, true);
  out.set(unread, 8);
  v.setUint32(8 + unread.length, unwritten.length, true);
  out.set(unwritten, 12 + unread.length);
  out.set(userData, 12 + unread.length + unwritten.length);
  return out;
}

export function decodeApp(bytes: Uint8Array): { migrations: number; unread: Uint8Array; unwritten: Uint8Array; userData: Uint8Array } {
  if (bytes.length < 12) throw new MigrationError('ERR_MIGRATION_SNAPSHOT', 'app record shorter than its header');
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const n = v.getUint32(4, true);
  if (n > bytes.length - 12) throw new MigrationError('ERR_MIGRATION_SNAPSHOT', 'app record: unread length beyond the record');
  const w = v.getUint32(8 + n, true);
  if (w > bytes.length - 12 - n) throw new MigrationError('ERR_MIGRATION_SNAPSHOT', 'app record: unwritten length beyond the record');
  return {
    migrations: v.getUint32(0, true), unread: bytes.slice(8, 8 + n), unwritten: bytes.slice(12 + n, 12 + n + w),
    userData: bytes.slice(12 + n + w),
  };
}
