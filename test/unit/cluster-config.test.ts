// The command-line side of joining a cluster: the peer list and the fault-injection switch, which must
// refuse what it does not understand (a typo would otherwise test nothing).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../runtime/errors.js';
import { migrationFaultsFromEnv, parsePeers } from '../../runtime/migration/cluster.js';

describe('cluster configuration', () => {
  it('parses NAME=IPv4[:PORT] peer lists and refuses malformed ones', () => {
    assert.deepEqual(parsePeers('hostB=10.77.2.10,hostC=10.77.3.10:7401'), [
      { name: 'hostB', address: '10.77.2.10' },
      { name: 'hostC', address: '10.77.3.10', port: 7401 },
    ]);
    for (const bad of ['hostB', 'hostB=10.77.2', 'hostB=10.77.2.10:0', 'hostB=10.77.2.10:70000', 'a b=1.2.3.4']) {
      assert.throws(() => parsePeers(bad), ConfigError, bad);
    }
  });

  it('CAPYBARA_MIGRATION_FAULTS names the faults; unknown names are refused', () => {
    assert.equal(migrationFaultsFromEnv(''), undefined);
    assert.equal(migrationFaultsFromEnv(undefined), undefined);
    assert.deepEqual(migrationFaultsFromEnv('dropOffers'), { dropOffers: true });
    assert.deepEqual(migrationFaultsFromEnv('dropAnswers, dropOffers'), { dropAnswers: true, dropOffers: true });
    assert.throws(() => migrationFaultsFromEnv('dropOffer'), ConfigError);
  });
});
