//! The worker pool: threads shared by every room's mixer, always running the mixer whose
//! next poll is due first, to completion (a job: control commands, media, then `poll`).

use super::*;

/// Worker threads shared by mixers, earliest deadline first (see the module docs).
pub struct MixerPool {
    shared: Arc<PoolShared>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MixerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MixerPool({} threads)", self.workers.len())
    }
}

struct PoolShared {
    state: Mutex<PoolState>,
    cv: Condvar,
}

#[derive(Default)]
struct PoolState {
    slots: HashMap<u64, Slot>,
    next_id: u64,
    closing: bool,
}

struct Slot {
    /// `None` while a worker runs it.
    job: Option<Box<Job>>,
    /// When its next poll is due.
    due: Instant,
    /// A control command is waiting: run it now.
    urgent: bool,
}

/// One mixer with its queue, sink and clock.
struct Job {
    mixer: Mixer,
    rx: Receiver<Command>,
    ctl: Receiver<Command>,
    /// Commands were left queued by the last run: run again at once.
    backlog: bool,
    sink: Sink,
    start: Instant,
    counters: Arc<DriverCounters>,
    /// Replies of deferred cues, by id.
    cue_replies: HashMap<String, Vec<CueReply>>,
    /// Dropped with the job: tells the driver the mixer is gone.
    _done: SyncSender<()>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MixerPool {
    /// A pool of `threads` workers (at least 1), named `cohost-mixer`.
    pub fn new(threads: usize) -> Result<Arc<Self>, MixerError> {
        let shared = Arc::new(PoolShared {
            state: Mutex::new(PoolState::default()),
            cv: Condvar::new(),
        });
        let mut workers = Vec::new();
        for _ in 0..threads.max(1) {
            let sh = Arc::clone(&shared);
            let w = std::thread::Builder::new()
                .name("cohost-mixer".into())
                .spawn(move || worker(&sh));
            match w {
                Ok(j) => workers.push(j),
                Err(_) => {
                    // Stop the ones already started.
                    drop(MixerPool { shared, workers });
                    return Err(MixerError::Stopped);
                }
            }
        }
        Ok(Arc::new(MixerPool { shared, workers }))
    }

    /// Worker threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Mixers in the pool now (running, or stopped and not yet removed).
    pub fn mixers(&self) -> usize {
        lock(&self.shared.state).slots.len()
    }

    /// Creates a mixer and runs it in this pool; `sink` receives every output, on a worker
    /// thread, in time order. `counters` as in [`MixerDriver::spawn_counted`].
    pub fn spawn<F>(
        self: &Arc<Self>,
        config: MixConfig,
        counters: Arc<DriverCounters>,
        sink: F,
    ) -> Result<MixerDriver, MixerError>
    where
        F: FnMut(MixerOutput) + Send + 'static,
    {
        let mixer = Mixer::new(config)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let (ctl_tx, ctl) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        let start = Instant::now();
        let job = Box::new(Job {
            mixer,
            rx,
            ctl,
            backlog: false,
            sink: Box::new(sink),
            start,
            counters,
            cue_replies: HashMap::new(),
            _done: done_tx,
        });
        let mut st = lock(&self.shared.state);
        let id = st.next_id;
        st.next_id += 1;
        st.slots.insert(
            id,
            Slot {
                job: Some(job),
                due: start,
                urgent: false,
            },
        );
        drop(st);
        self.shared.cv.notify_all();
        Ok(MixerDriver {
            handle: MixerHandle {
                tx,
                ctl: ctl_tx,
                waker: Waker {
                    shared: Arc::clone(&self.shared),
                    id,
                },
            },
            done: Mutex::new(Some(done_rx)),
            _pool: Arc::clone(self),
        })
    }
}

impl Drop for MixerPool {
    fn drop(&mut self) {
        lock(&self.shared.state).closing = true;
        self.shared.cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(shared: &PoolShared) {
    let mut st = lock(&shared.state);
    loop {
        if st.closing {
            return;
        }
        let now = Instant::now();
        let next = st
            .slots
            .iter()
            .filter(|(_, s)| s.job.is_some())
            .map(|(id, s)| (if s.urgent { now } else { s.due }, *id))
            .min();
        match next {
            Some((due, id)) if due <= now => {
                let Some(mut job) = st.slots.get_mut(&id).and_then(|s| {
                    s.urgent = false;
                    s.job.take()
                }) else {
                    continue;
                };
                drop(st);
                // A panic in one room's mixer (or its sink) must not take a worker shared by
                // every room with it: that mixer is dropped (its handles get `Stopped`), the
                // others go on.
                let keep = match std::panic::catch_unwind(AssertUnwindSafe(|| job.run())) {
                    Ok(keep) => keep,
                    Err(_) => {
                        tracing::error!("mixer panicked; its program stops");
                        false
                    }
                };
                // Audio blocks due before the next picture are produced with it: one run per
                // frame instead of one per frame and one per 20 ms audio block.
                let next_due = job.start + job.mixer.next_video_due();
                if !keep {
                    // Drop the mixer outside the lock; this also tells its driver.
                    drop(job);
                    st = lock(&shared.state);
                    st.slots.remove(&id);
                } else {
                    st = lock(&shared.state);
                    if let Some(slot) = st.slots.get_mut(&id) {
                        slot.due = next_due;
                        // What is left waits behind the other rooms due now, not longer.
                        slot.urgent |= job.backlog;
                        slot.job = Some(job);
                    }
                }
                // Others may be sleeping towards a later deadline than this one's.
                shared.cv.notify_all();
            }
            Some((due, _)) => {
                st = shared
                    .cv
                    .wait_timeout(st, due.saturating_duration_since(now))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            None => st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
        }
    }
}

impl Job {
    /// Applies queued commands (control first; at most [`CONTROL_PER_RUN`] control commands
    /// and [`QUEUE_CAPACITY`] media ones: a run's work is bounded however fast the queues
    /// fill), then polls if due. False once stopped.
    fn run(&mut self) -> bool {
        self.backlog = false;
        for n in 0.. {
            if n == CONTROL_PER_RUN {
                self.backlog = true;
                break;
            }
            match self.ctl.try_recv() {
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Ok(cmd) => self.apply(cmd),
                Err(TryRecvError::Empty) => break,
            }
        }
        for n in 0.. {
            if n == QUEUE_CAPACITY {
                self.backlog = true;
                break;
            }
            match self.rx.try_recv() {
                Ok(Command::Stop) => return false,
                Ok(cmd) => self.apply(cmd),
                // The control sender lives as long as this one: disconnection is seen there.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let now = self.start.elapsed();
        if now < self.mixer.poll_timeout() {
            return true;
        }
        let outs = self.mixer.poll(now);
        // Pictures of one poll are due one interval apart, the last at `last_video_due`;
        // they are all handed over now.
        let done = self.start.elapsed();
        let busy = done.saturating_sub(now);
        self.counters
            .add_poll_nanos(u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX));
        let pictures = outs
            .iter()
            .filter(|o| matches!(o, MixerOutput::Video(_)))
            .count() as u32;
        if let (Some(last), true) = (self.mixer.last_video_due(), pictures > 0) {
            let interval =
                Duration::from_nanos(1_000_000_000 / u64::from(self.mixer.config().fps.max(1)));
            let first = last.saturating_sub(interval * (pictures - 1));
            let n = (0..pictures)
                .filter(|k| done > first + interval * *k + interval)
                .count();
            if n > 0 {
                self.counters.add_late(n as u64);
            }
        }
        for o in outs {
            (self.sink)(o);
        }
        for (id, r) in self.mixer.take_cue_answers() {
            for reply in self.cue_replies.remove(&id).unwrap_or_default() {
                reply(r.clone());
            }
        }
        true
    }

    fn apply(&mut self, cmd: Command) {
        let mixer = &mut self.mixer;
        let since = |t: Instant| t.saturating_duration_since(self.start);
        match cmd {
            Command::AddInput(id, host) => mixer.add_input(&id, host),
            Command::RemoveInput(id) => mixer.remove_input(&id),
            Command::Video(id, au, ts, at) => mixer.push_video_bytes(&id, au, ts, since(at)),
            Command::Opus(id, p, ts, at) => mixer.push_opus(&id, &p, ts, since(at)),
            Command::SenderReport(id, video, r) => mixer.sender_report(&id, video, r),
            Command::Pcm(id, s) => mixer.push_pcm(&id, &s),
            Command::SetLayout(l) => mixer.set_layout(l),
            Command::SetImage(name, image) => mixer.set_image(&name, image),
            Command::SetDecor(d) => {
                if let Err(e) = mixer.set_decor(d) {
                    tracing::warn!(error = %e, "decor refused");
                }
            }
            Command::SetDisplayName(id, name) => mixer.set_display_name(&id, &name),
            Command::SetFonts(f) => mixer.set_fonts(f),
            Command::Cue(id, data, repeat, reply) => reply(mixer.cue(&id, data, repeat)),
            Command::CueWhenShown(c, reply) => match mixer.cue_when_shown(
                &c.id,
                c.data,
                c.repeat,
                &c.identity,
                c.rtp_ts,
                c.give_up_after,
            ) {
                Ok(Some(ack)) => reply(Ok(ack)),
                Ok(None) => self.cue_replies.entry(c.id).or_default().push(reply),
                Err(e) => reply(Err(e)),
            },
            Command::RequestKeyframe => mixer.request_keyframe(),
            Command::OpusOutput(on) => mixer.set_opus_output(on),
            Command::Headers(reply) => {
                let _ = reply.send(Headers {
                    avc_decoder_config: mixer.avc_decoder_config(),
                    audio_specific_config: mixer.audio_specific_config(),
                });
            }
            Command::State(reply) => {
                let _ = reply.send(mixer.state());
            }
            Command::Snapshot(reply) => {
                let _ = reply.send(mixer.snapshot());
            }
            Command::Stop => {}
        }
    }
}

/// Wakes the pool for one mixer (control commands are handled at once, media at the next
/// poll).
#[derive(Clone)]
pub(super) struct Waker {
    shared: Arc<PoolShared>,
    pub(super) id: u64,
}

impl Waker {
    pub(super) fn wake(&self) {
        let mut st = lock(&self.shared.state);
        if let Some(slot) = st.slots.get_mut(&self.id) {
            slot.urgent = true;
        }
        drop(st);
        self.shared.cv.notify_all();
    }
}
