// N-API side of the migration lane (native/mig/lane.h): keys from the channel handshake, steering, the
// call that starts a native flow's migration, outcomes and counters. Converts arguments and calls the
// lane under the engine lock, nothing more; the protocol around it is runtime/migration/'s.
#ifndef CPB_ADDON_LANE_WRAP_H
#define CPB_ADDON_LANE_WRAP_H
#include <napi.h>

extern "C" {
#include "engine.h"
}

namespace capy {
// laneKey(peerIp, keyId: Buffer(8), txKey(32), txIv(12), rxKey(32), rxIv(12), backend) -> 0 | -errno
Napi::Value LaneKey(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneDropKey(peerIp, keyId: Buffer(8)) -> 0 | -errno
Napi::Value LaneDropKey(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneSteer('lb', pinnedMapPath, self) | laneSteer('mem', wire, self) | laneSteer('none') -> 0 | -errno
Napi::Value LaneSteer(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneMigrate(flowId, peerIp, migrationId, epoch, budgetMs[, record]) -> [0 | -errno, lockUs, workUs, sendUs]
// (record: the layers above TCP of a flow served in JS, mig/lanejs.h)
Napi::Value LaneMigrate(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneListen(port, on) -> 0 | -errno: whether JS takes migrated connections on port
Napi::Value LaneListen(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneTake() -> [flowId, record: Buffer] | null: the oldest JS flow the lane adopted here whose record waits
Napi::Value LaneTake(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneOutcome(migrationId) -> {err, answeredUs, forwarded, snapshotBytes} | null
Napi::Value LaneOutcome(const Napi::CallbackInfo &info, struct cpb_engine *e);
// laneStats() -> counters (struct cpb_lane_stats)
Napi::Value LaneStats(const Napi::CallbackInfo &info, struct cpb_engine *e);
}  // namespace capy
#endif
