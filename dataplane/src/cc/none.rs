//! `none`: no congestion control. The flow sends at line rate with a fixed window
//! (`window_bytes`, default the NIC's configured window) and ignores every signal.
//! The baseline the real algorithms are measured against.

use super::{AckSample, CongestionControl, FlowContext};
use crate::packet::Nanos;

#[derive(Debug, Clone)]
pub struct NoCc {
    window: u64,
    rate: u64,
}

pub(super) fn factory(ctx: &FlowContext<'_>) -> Result<Box<dyn CongestionControl>, String> {
    ctx.check_params("none", &["window_bytes"])?;
    let window = ctx.param("window_bytes", ctx.init_window as f64);
    if window.is_nan() || window < f64::from(ctx.mtu) {
        return Err(format!(
            "none: window_bytes = {window} is smaller than one packet ({} bytes)",
            ctx.mtu
        ));
    }
    Ok(Box::new(NoCc {
        window: window as u64,
        rate: ctx.line_rate_bps,
    }))
}

impl CongestionControl for NoCc {
    fn on_ack(&mut self, _now: Nanos, _sample: &AckSample<'_>) {}
    fn window(&self) -> u64 {
        self.window
    }
    fn pacing_rate(&self) -> u64 {
        self.rate
    }

    fn wants_telemetry(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::{CcParams, Registry};
    use super::*;

    #[test]
    fn fixed_window_line_rate_and_param_checks() {
        let mut params = CcParams::new();
        let ctx = FlowContext::new(1, 100_000_000_000, 10_000, 4096, 200_000, &params);
        let cc = Registry::default().create("none", &ctx).unwrap();
        assert_eq!(cc.window(), 200_000);
        assert_eq!(cc.pacing_rate(), 100_000_000_000);
        params.insert("alpha".into(), 1.0);
        let ctx = FlowContext::new(1, 100_000_000_000, 10_000, 4096, 200_000, &params);
        let err = Registry::default().create("none", &ctx).unwrap_err();
        assert!(err.contains("no parameter `alpha`"), "{err}");
        let err = Registry::default().create("hpcc-typo", &ctx).unwrap_err();
        assert!(err.contains("registered: none"), "{err}");
    }
}
