//! The minimum watermark over a subtask's input channels; idle channels are
//! skipped so a quiet source does not hold event time back forever.

use runnel_common::Watermark;
use runnel_common::time::{TS_MAX, TS_MIN, Timestamp};

/// Per-channel watermarks and their combined minimum.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    channels: Vec<ChannelState>,
    current: Timestamp,
}

#[derive(Debug, Clone, Copy)]
struct ChannelState {
    at: Timestamp,
    idle: bool,
}

impl WatermarkTracker {
    /// A tracker for `n` channels, all at "no progress yet".
    pub fn new(n: usize) -> Self {
        Self {
            channels: vec![
                ChannelState {
                    at: TS_MIN,
                    idle: false
                };
                n
            ],
            current: TS_MIN,
        }
    }

    /// The combined watermark so far.
    pub fn current(&self) -> Timestamp {
        self.current
    }

    /// Records `wm` from `channel`; returns the new combined watermark if it advanced.
    pub fn update(&mut self, channel: usize, wm: Watermark) -> Option<Timestamp> {
        let c = &mut self.channels[channel];
        match wm {
            Watermark::At(ts) => {
                c.at = c.at.max(ts);
                c.idle = false;
            }
            Watermark::Idle => c.idle = true,
        }
        self.recompute()
    }

    /// The channel ended: it no longer holds anything back.
    pub fn end(&mut self, channel: usize) -> Option<Timestamp> {
        self.channels[channel] = ChannelState {
            at: TS_MAX,
            idle: false,
        };
        self.recompute()
    }

    /// True when every channel that has not ended is idle.
    pub fn all_idle(&self) -> bool {
        self.channels.iter().all(|c| c.idle || c.at == TS_MAX)
            && self.channels.iter().any(|c| c.idle)
    }

    fn recompute(&mut self) -> Option<Timestamp> {
        let ended = |c: &ChannelState| c.at == TS_MAX;
        let active = self.channels.iter().filter(|c| !c.idle && !ended(c));
        let min = match active.map(|c| c.at).min() {
            Some(m) => Some(m),
            // Every channel is idle or ended. Idle ones cannot hold time back any more, so
            // move to the furthest any of them reached (as Flink's watermark valve does):
            // otherwise a channel that went idle after its last watermark while another
            // was still starting up would keep that watermark from ever counting. An
            // ended channel is not a watermark: only when all ended is time over.
            None => self
                .channels
                .iter()
                .filter(|c| !ended(c))
                .map(|c| c.at)
                .max()
                .or((!self.channels.is_empty()).then_some(TS_MAX)),
        };
        match min {
            Some(m) if m > self.current => {
                self.current = m;
                Some(m)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_channels_skipping_idle() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, Watermark::At(10)), None);
        assert_eq!(t.update(1, Watermark::At(5)), Some(5));
        assert_eq!(t.update(1, Watermark::Idle), Some(10));
        assert_eq!(
            t.update(1, Watermark::At(7)),
            None,
            "a channel coming back does not move time backwards"
        );
        assert_eq!(
            t.update(0, Watermark::At(20)),
            None,
            "held at 10 by channel 1 (at 7)"
        );
        assert_eq!(t.end(1), Some(20));
        assert_eq!(t.end(0), Some(TS_MAX));
    }

    #[test]
    fn all_idle_moves_to_the_furthest_channel() {
        // Channel 0 sends its last watermark and goes idle while channel 1 has not
        // sent anything; once channel 1 goes idle too, 24 must count.
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, Watermark::At(24)), None);
        assert_eq!(t.update(0, Watermark::Idle), None);
        assert!(!t.all_idle());
        assert_eq!(t.update(1, Watermark::Idle), Some(24));
        assert!(t.all_idle());
        assert_eq!(t.update(1, Watermark::At(30)), Some(30));
    }

    #[test]
    fn all_idle_ignores_ended_channels() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, Watermark::At(5)), None);
        assert_eq!(t.end(1), Some(5));
        assert_eq!(
            t.update(0, Watermark::Idle),
            None,
            "an ended channel is not a watermark"
        );
        assert!(t.all_idle());
    }
}
