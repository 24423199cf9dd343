// TLS options as Node takes them, turned into what the engine gets; the TLS layer's cheap record check.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../runtime/errors.js';
import { alpnWire, createSecureContext, defaultServername, splitCiphers } from '../../runtime/tls.js';
import { SnapshotError } from '../../stack/errors.js';
import { checkTlsRecord } from '../../stack/tls.js';

describe('TLS options', () => {
  it('ALPN names become the length-prefixed wire list', () => {
    assert.deepEqual([...alpnWire(['h2', 'http/1.1'])!], [2, 0x68, 0x32, 8, ...Buffer.from('http/1.1')]);
    assert.equal(alpnWire(undefined), undefined);
    assert.throws(() => alpnWire(['']), ConfigError);
    assert.throws(() => alpnWire(['x'.repeat(256)]), ConfigError);
  });

  it("Node's one cipher string splits into TLS 1.2 ciphers and TLS 1.3 suites", () => {
    assert.deepEqual(splitCiphers('TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256'),
      { ciphers: 'ECDHE-RSA-AES128-GCM-SHA256', ciphersuites: 'TLS_AES_128_GCM_SHA256' });
    assert.deepEqual(splitCiphers('TLS_CHACHA20_POLY1305_SHA256'), { ciphers: undefined, ciphersuites: 'TLS_CHACHA20_POLY1305_SHA256' });
    assert.deepEqual(splitCiphers(undefined), {});
    assert.throws(() => splitCiphers(' '), ConfigError);
  });

  it('SNI defaults to the host unless it is an address (as Node)', () => {
    assert.equal(defaultServername('10.77.9.1', undefined), null);
    assert.equal(defaultServername('example.test', undefined), 'example.test');
    assert.equal(defaultServername('10.77.9.1', 'capybara.test'), 'capybara.test');
    assert.equal(defaultServername('example.test', ''), null);
  });

  it('bad options are ConfigErrors before anything native runs', () => {
    assert.throws(() => createSecureContext({ key: 'k' } as never), ConfigError); // a server needs cert too
    assert.throws(() => createSecureContext({ key: 'k', cert: 'c', minVersion: 'TLSv1.1' as never }), ConfigError);
    assert.throws(() => createSecureContext({ key: 'k', cert: 'c', minVersion: 'TLSv1.3', maxVersion: 'TLSv1.2' }), ConfigError);
    assert.throws(() => createSecureContext({ key: 'k', cert: 'c', keyUpdateBytes: 0 }), ConfigError);
  });

  it('the tls record is checked for magic, version and length before the engine sees it', () => {
    const rec = new Uint8Array(1024);
    rec.set(Buffer.from('CTLS'));
    const v = new DataView(rec.buffer);
    v.setUint16(4, 1, true);
    v.setUint32(8, 1024, true);
    checkTlsRecord(rec);
    assert.throws(() => checkTlsRecord(rec.subarray(0, 10)), SnapshotError);
    assert.throws(() => checkTlsRecord(rec.subarray(0, 1000)), (e: SnapshotError) => e.code === 'ERR_SNAPSHOT_CORRUPT');
    v.setUint16(4, 2, true);
    assert.throws(() => checkTlsRecord(rec), (e: SnapshotError) => e.code === 'ERR_SNAPSHOT_VERSION');
    v.setUint16(4, 1, true);
    rec[0] = 0x58;
    assert.throws(() => checkTlsRecord(rec), (e: SnapshotError) => e.code === 'ERR_SNAPSHOT_CORRUPT');
  });
});
