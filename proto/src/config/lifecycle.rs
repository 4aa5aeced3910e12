//! How a backend leaves and rejoins its upstream's rotation by what its
//! traffic shows: passive outlier detection (`outlier_detection`).

use super::duration;
use super::errors::{Path, Problems};
use isame_config_derive::Config;
use serde::Serialize;
use std::time::Duration;

/// Passive outlier detection: a backend whose answers go bad is taken out
/// of rotation for a while, without waiting for health checks (which may be
/// off); it comes back by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct OutlierDetection {
    /// Whether backends are ejected.
    #[config(default = true)]
    pub enabled: bool,
    /// 5xx answers in a row (gateway errors included) that eject a
    /// backend; `0` turns the rule off.
    #[config(default = 5)]
    pub consecutive_5xx: u32,
    /// Gateway errors in a row that eject a backend: connections refused or
    /// reset, timeouts, and 502, 503 and 504 answers; `0` turns the rule off.
    #[config(default = 5)]
    pub consecutive_gateway_errors: u32,
    /// How often the success-rate rule is judged, and how often an ejected
    /// backend's ejection count drops by one once it is back.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(10))]
    pub interval: Duration,
    /// An ejection lasts this long times the number of times the backend
    /// was ejected recently (counting this one)...
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(30))]
    pub base_ejection_time: Duration,
    /// ...and never longer than this.
    #[serde(serialize_with = "duration::serialize")]
    #[config(default = Duration::from_secs(300))]
    pub max_ejection_time: Duration,
    /// Most of the upstream's backends that may be ejected at once, in
    /// percent, rounded down but at least one backend (unless `0`); a
    /// backend that fails while the cap is reached stays in rotation.
    #[config(default = 10, max = 100)]
    pub max_ejection_percent: u32,
    /// Eject a backend whose share of good answers over the last
    /// `interval` falls below a floor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<SuccessRate>,
}

/// The success-rate rule of outlier detection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Config)]
pub struct SuccessRate {
    /// The lowest share of answers that are not 5xx or gateway errors, in
    /// percent, that keeps a backend in rotation.
    #[config(required, min = 1, max = 100)]
    pub minimum_percent: u32,
    /// Requests a backend must have answered in the interval before the
    /// rule judges it.
    #[config(default = 100, min = 1)]
    pub request_volume: u32,
}

/// The rules across outlier detection's fields.
pub(super) fn validate(o: &OutlierDetection, path: &Path, p: &mut Problems) {
    if !o.enabled {
        return;
    }
    for (field, d) in [
        ("interval", o.interval),
        ("base_ejection_time", o.base_ejection_time),
    ] {
        if d.is_zero() {
            p.add(&path.key(field), "must be longer than 0s");
        }
    }
    if o.max_ejection_time < o.base_ejection_time {
        p.add(
            &path.key("max_ejection_time"),
            "must be at least base_ejection_time",
        );
    }
    if o.consecutive_5xx == 0 && o.consecutive_gateway_errors == 0 && o.success_rate.is_none() {
        p.add(
            path,
            "no rule left: set consecutive_5xx, consecutive_gateway_errors or success_rate (or enabled: false)",
        );
    }
}
