// The record a connection served in JavaScript carries through the engines' migration lane
// (native/mig/lanejs.h): its layers above TCP (the TLS session when there is one, then the app record) in a
// snapshot container like the channel's, whose tcp record is empty. The engine's own snapshot of the TCP flow
// rides beside the record in the offer, taken in the same call that freezes the flow, and the target's engine
// has adopted it before its JS sees the record: restoring starts from that flow id.
import { AppLayer, PluggedLayer, type AppState } from '../../stack/layer.js';
import { snapshotKinds, tlsLayer } from '../../stack/tls.js';
import type { EngineInstance } from '../native.js';
import { layerFailure } from './errors.js';

interface LaneConn {
  flowId: number;
  userData: Uint8Array;
}

const USER_DATA_MAX = 1024 * 1024;

export class LaneRecord {
  readonly #plain: AppLayer<LaneConn, number, number>;
  readonly #tls: AppLayer<LaneConn, number, number>;

  constructor(engine: () => EngineInstance) {
    const tcp = new PluggedLayer<LaneConn, number, number>({
      kind: 'tcp',
      version: 1,
      maxBytes: 0, // the engine's snapshot travels beside the record, never in it
      serialize: () => new Uint8Array(0),
      deserialize: (_bytes, _version, _lower, flowId) => flowId,
      // Nothing of its own to undo: the caller aborts the adopted flow when a layer above fails.
    });
    this.#plain = new AppLayer<LaneConn, number, number>({ lower: tcp, maxUserData: USER_DATA_MAX });
    const tls = tlsLayer<LaneConn, number>(tcp, engine, layerFailure);
    this.#tls = new AppLayer<LaneConn, number, number>({ lower: tls, maxUserData: USER_DATA_MAX });
  }

  /** The record of flowId's layers above TCP; appRecord is its app layer's payload (app-record.ts). */
  serialize(flowId: number, encrypted: boolean, appRecord: Uint8Array): Uint8Array {
    return (encrypted ? this.#tls : this.#plain).serialize({ flowId, userData: appRecord }, flowId);
  }

  /** Restores the layers above TCP onto flowId, adopted by the engine; throws (a typed error) when the record is bad. */
  restore(flowId: number, record: Uint8Array): { tls: boolean; state: AppState<number> } {
    const tls = snapshotKinds(record).includes('tls');
    return { tls, state: (tls ? this.#tls : this.#plain).deserialize(record, flowId) };
  }
}
