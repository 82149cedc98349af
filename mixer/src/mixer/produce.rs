//! Producing the program: the composited picture and the mixed audio block for one tick,
//! and the speaker the layouts feature.

use super::*;

impl Mixer {
    pub(super) fn display_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.inputs.len()).collect();
        order.sort_by_key(|&i| self.inputs.get(i).map(|x| (!x.is_host, x.seq)));
        order
    }

    pub(super) fn current_regions(&self) -> Vec<Region> {
        let order = self.display_order();
        let parts: Vec<LayoutParticipant<'_>> = order
            .iter()
            .filter_map(|&i| self.inputs.get(i))
            .map(|i| LayoutParticipant {
                identity: &i.identity,
                is_host: i.is_host,
            })
            .collect();
        let template_speaker = match self.layout {
            Layout::Template {
                template: Template::Speaker,
            }
            | Layout::Bare(Template::Speaker) => self.speaker.as_deref(),
            _ => None,
        };
        compute_regions(
            &self.layout,
            self.cfg.width,
            self.cfg.height,
            &parts,
            template_speaker,
            self.cfg.fit,
        )
    }

    pub(super) fn produce_video(&mut self, due: Duration, out: &mut Vec<MixerOutput>) {
        self.decode_due(due);
        self.release_deferred(due);
        let n = self.next_video;
        self.next_video += 1;
        let pts_ms = n * 1000 / u64::from(self.cfg.fps);
        let stall = Duration::from_millis(self.cfg.stall_timeout_ms);
        // Stall / resume transitions.
        for input in &mut self.inputs {
            let live = input
                .last_picture_at
                .is_some_and(|t| due.saturating_sub(t) <= stall);
            if input.last_picture_at.is_some() && live == input.stalled {
                input.stalled = !live;
                self.events.push_back(if live {
                    MixerEvent::InputResumed(input.identity.clone())
                } else {
                    MixerEvent::InputStalled(input.identity.clone())
                });
            }
        }
        let regions = self.current_regions();
        let bg = self.background;
        // The background shows only where no picture is drawn: skip the full-canvas fill when
        // cropped pictures tile the whole canvas (the 2-up and 4-up grids).
        let opaque: Vec<&Region> = regions
            .iter()
            .filter(|r| r.fit == Fit::Crop && (r.x | r.y | r.w | r.h) % 2 == 0)
            .filter(|r| {
                self.inputs
                    .iter()
                    .find(|i| i.identity == r.identity)
                    .is_some_and(|i| !i.stalled && i.video.picture().is_some())
            })
            .collect();
        let (w, h) = (self.cfg.width, self.cfg.height);
        let bg_image = self.studio.background_frame(w, h, self.cfg.background);
        if !covers(&opaque, w, h) {
            match bg_image {
                Some(f) => self.canvas.copy_from(f),
                None => self.canvas.fill_rect(0, 0, w, h, bg),
            }
        }
        for r in &regions {
            let Some(input) = self.inputs.iter().find(|i| i.identity == r.identity) else {
                continue;
            };
            match input.video.picture() {
                Some(pic) if !input.stalled => match (r.fit, bg_image) {
                    // Letterbox bars show the background image.
                    (Fit::Letterbox, Some(f)) => {
                        self.canvas.copy_rect_from(f, r.x, r.y, r.w, r.h);
                        self.compositor
                            .draw_picture(&mut self.canvas, pic, r, r.fit);
                    }
                    _ => self.compositor.draw(&mut self.canvas, pic, r, r.fit, bg),
                },
                _ => self.compositor.draw_placeholder(
                    &mut self.canvas,
                    r,
                    identity_color(&input.identity),
                    input.level.level(),
                ),
            }
        }
        self.studio.draw_labels(&mut self.canvas, &regions);
        self.studio.draw_overlays(&mut self.canvas);
        self.studio.end_frame();
        let force = n.is_multiple_of(self.gop) || self.force_keyframe;
        let encoded = match self.encoder.encode(&self.canvas, pts_ms, force) {
            Ok(Some(e)) => e,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "program encode failed");
                return;
            }
        };
        if encoded.keyframe {
            self.force_keyframe = false;
        }
        let mut seis = Vec::new();
        let changed = self.last_regions.as_ref() != Some(&regions);
        if encoded.keyframe || changed {
            let levels: HashMap<&str, f32> = self
                .inputs
                .iter()
                .map(|i| (i.identity.as_str(), i.level.level()))
                .collect();
            let json = layout_sei_json(pts_ms, self.cfg.width, self.cfg.height, &regions, |id| {
                levels.get(id).copied().unwrap_or(0.0)
            });
            seis.push(h264::build_user_data_sei(&h264::LAYOUT_SEI_UUID, &json));
        }
        for cue in &mut self.cues {
            seis.push(cue.sei.clone());
            cue.remaining = cue.remaining.saturating_sub(1);
        }
        self.cues.retain(|c| c.remaining > 0);
        let data = if seis.is_empty() {
            encoded.data
        } else {
            h264::insert_sei_before_slices(&encoded.data, &seis).unwrap_or(encoded.data)
        };
        self.last_regions = Some(regions);
        self.video_frames += 1;
        out.push(MixerOutput::Video(EncodedVideo {
            data: Bytes::from(data),
            pts_ms,
            dts_ms: pts_ms,
            keyframe: encoded.keyframe,
        }));
    }

    pub(super) fn produce_audio(&mut self, due: Duration, out: &mut Vec<MixerOutput>) {
        let m = self.next_block;
        self.next_block += 1;
        self.mix_buf.fill(0.0);
        let mut loudest: Option<(usize, f32)> = None;
        let lead = lip_sync_lead(self.cfg.fps);
        for (idx, input) in self.inputs.iter_mut().enumerate() {
            input.jitter.pull(&mut self.in_buf, due);
            if self.cfg.lip_sync {
                // Pictures arriving later than the sound captured with them (sender
                // reports) need that much less hold-back, and their audio that much more
                // wait; earlier ones the reverse. Without reports, by arrival.
                let offset = input.av.offset_ms().unwrap_or(0.0) / 1000.0;
                let later = Duration::from_secs_f64(offset.max(0.0));
                let earlier = Duration::from_secs_f64((-offset).max(0.0));
                // When the video needs longer than the audio waits (heavy jitter, repairs),
                // the audio waits longer: video delay is counted from the fastest transit,
                // audio's from a typical arrival.
                input.jitter.set_sync_delay(
                    (input.playout.own_delay() + lead + later)
                        .saturating_sub(input.playout.median_lateness() + earlier),
                );
                if let Some(d) = input.jitter.delay() {
                    // A picture waits as long as its audio: the audio's wait after arrival,
                    // plus how late a typical frame arrives behind the fastest one.
                    let floor = (d + input.playout.median_lateness() + earlier)
                        .saturating_sub(lead + later);
                    input.playout.set_floor(floor);
                }
            }
            let level = input.level.update(&self.in_buf);
            if level > 0.5 && loudest.is_none_or(|(_, l)| level > l) {
                loudest = Some((idx, level));
            }
            for (o, s) in self.mix_buf.iter_mut().zip(&self.in_buf) {
                *o += *s;
            }
        }
        self.update_speaker(loudest.map(|(i, _)| i));
        self.limiter.process(&mut self.mix_buf);
        if let Some(pkt) = self
            .opus_on
            .then(|| self.opus.encode(&self.mix_buf))
            .flatten()
        {
            out.push(MixerOutput::Opus(OpusFrame {
                data: Bytes::from(pkt),
                pts_ms: m * 20,
            }));
        }
        for (start, au) in self.aac.encode(&self.mix_buf) {
            out.push(MixerOutput::Audio(AacFrame {
                data: Bytes::from(au),
                pts_ms: start * 1000 / u64::from(SAMPLE_RATE),
            }));
        }
    }

    /// Dominant speaker with hysteresis: someone else must be loudest for one second.
    pub(super) fn update_speaker(&mut self, loudest: Option<usize>) {
        let Some(id) = loudest
            .and_then(|i| self.inputs.get(i))
            .map(|i| i.identity.clone())
        else {
            self.speaker_candidate = None;
            return;
        };
        if self.speaker.is_none() {
            let host = self
                .display_order()
                .first()
                .and_then(|&i| self.inputs.get(i))
                .map(|i| i.identity.clone());
            self.speaker = host;
        }
        if self.speaker.as_deref() == Some(id.as_str()) {
            self.speaker_candidate = None;
            return;
        }
        let count = match &self.speaker_candidate {
            Some((c, n)) if *c == id => n + 1,
            _ => 1,
        };
        if count >= 50 {
            self.speaker = Some(id);
            self.speaker_candidate = None;
        } else {
            self.speaker_candidate = Some((id, count));
        }
    }
}

/// True when `regions` (clipped to the canvas) do not overlap and together cover all of it.
pub(super) fn covers(regions: &[&Region], width: u32, height: u32) -> bool {
    let clip = |r: &Region| {
        let x1 = r.x.saturating_add(r.w).min(width);
        let y1 = r.y.saturating_add(r.h).min(height);
        (r.x.min(x1), r.y.min(y1), x1, y1)
    };
    let rects: Vec<(u32, u32, u32, u32)> = regions.iter().map(|r| clip(r)).collect();
    let area: u64 = rects
        .iter()
        .map(|&(x0, y0, x1, y1)| u64::from(x1 - x0) * u64::from(y1 - y0))
        .sum();
    let disjoint = rects.iter().enumerate().all(|(i, a)| {
        rects
            .iter()
            .skip(i + 1)
            .all(|b| a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1)
    });
    disjoint && area == u64::from(width) * u64::from(height)
}
