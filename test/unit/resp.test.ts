// RESP framing (runtime/apps/resp.ts) and the Redis app's state format (runtime/apps/redis.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RespError, encodeCommand, scanCommand, scanReply } from '../../runtime/apps/resp.js';
import { decodeRedisState, encodeRedisState } from '../../runtime/apps/redis.js';

const b = (s: string) => Buffer.from(s, 'latin1');

describe('scanCommand', () => {
  it('finds a complete array command and its arguments', () => {
    const buf = Buffer.concat([encodeCommand(['SET', 'k', 'v\r\nx']), b('*1\r\n$4\r\nPING\r\n')]);
    const c = scanCommand(buf)!;
    assert.equal(c.length, encodeCommand(['SET', 'k', 'v\r\nx']).length);
    assert.deepEqual(c.args.map((a) => a.toString()), ['SET', 'k', 'v\r\nx']);
  });

  it('every proper prefix of a command is incomplete, never an error', () => {
    const cmd = encodeCommand(['INCR', 'counter:__rand_int__']);
    for (let n = 0; n < cmd.length; n++) assert.equal(scanCommand(cmd.subarray(0, n)), null, `prefix ${n}`);
    assert.equal(scanCommand(cmd)!.length, cmd.length);
  });

  it('inline commands', () => {
    assert.deepEqual(scanCommand(b('PING\r\n'))!.args.map(String), ['PING']);
    assert.deepEqual(scanCommand(b('set  a   b\n'))!.args.map(String), ['set', 'a', 'b']);
    assert.equal(scanCommand(b('\r\n'))!.args.length, 0);
    assert.equal(scanCommand(b('GET a')), null);
  });

  it('rejects malformed input and commands over the limit', () => {
    assert.throws(() => scanCommand(b('*1\r\n:5\r\n')), RespError);
    assert.throws(() => scanCommand(b('*x\r\n')), RespError);
    assert.throws(() => scanCommand(b('*1\r\n$3\r\nabcd\r\n')), RespError);
    assert.throws(() => scanCommand(b('*1\r\n$100\r\n'), { maxCommand: 64, maxArgs: 8 }), RespError);
    assert.throws(() => scanCommand(b('*9\r\n'), { maxCommand: 64, maxArgs: 8 }), RespError);
  });
});

describe('scanReply', () => {
  it('finds the end of every reply type, nested ones included', () => {
    const replies = ['+OK\r\n', '-ERR x\r\n', ':42\r\n', '$3\r\nabc\r\n', '$-1\r\n', '*-1\r\n', '*2\r\n$1\r\na\r\n*1\r\n:1\r\n',
      '_\r\n', ',1.5\r\n', '#t\r\n', '(123\r\n', '!3\r\nerr\r\n', '=7\r\ntxt:abc\r\n', '%1\r\n+k\r\n:1\r\n', '~1\r\n+a\r\n',
      '|1\r\n+key\r\n+val\r\n+OK\r\n'];
    const all = b(replies.join(''));
    let at = 0;
    for (const r of replies) {
      const end = scanReply(all, at);
      assert.equal(end, at + r.length, JSON.stringify(r));
      for (let n = at; n < end; n++) assert.equal(scanReply(all.subarray(0, n), at), -1);
      at = end;
    }
  });

  it('rejects what is not RESP', () => {
    assert.throws(() => scanReply(b('?x\r\n')), RespError);
    assert.throws(() => scanReply(b('$2\r\nabc\r\n')), RespError);
  });
});

describe('redis app state', () => {
  it('round-trips and rejects malformed states', () => {
    const s = { peerEof: true, db: 3, buffered: b('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva') };
    assert.deepEqual(decodeRedisState(encodeRedisState(s)), s);
    assert.deepEqual(decodeRedisState(new Uint8Array(0)), { peerEof: false, db: 0, buffered: Buffer.alloc(0) });
    const enc = Buffer.from(encodeRedisState(s));
    for (let n = 1; n < enc.length; n++) assert.throws(() => decodeRedisState(enc.subarray(0, n)), { code: 'ERR_APP_STATE' });
    const bad = Buffer.from(enc);
    bad[6] = 0x80;
    assert.throws(() => decodeRedisState(bad), { code: 'ERR_APP_STATE' });
  });
});
