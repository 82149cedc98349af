//! The programs' inputs: the SFU's publications as they become ready and go, each fed into
//! its room's program (started, or queued for a slot, as needed).

use super::*;

impl Programs {
    /// Follows the SFU's announcements (`Sfu::new`'s `program_events`) until the SFU is
    /// gone: a ready publisher becomes an input of its room's program (started if needed), a
    /// gone one stops being one. The task's handle aborts it (the program then sees nothing).
    pub fn follow(
        self: &Arc<Self>,
        mut events: mpsc::UnboundedReceiver<SfuEvent>,
    ) -> tokio::task::AbortHandle {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Some(p) = me.upgrade() else { return };
                match ev {
                    SfuEvent::PublisherReady { room, publisher } => {
                        p.publisher_ready(&room, &publisher)
                    }
                    SfuEvent::PublisherGone { room, identity } => {
                        p.publisher_gone(&room, &identity)
                    }
                }
            }
        })
        .abort_handle()
    }

    /// A live publication of `room` the SFU announced.
    pub(super) fn publisher(&self, room: &str, identity: &str) -> Option<Arc<Publisher>> {
        lock(&self.rooms)
            .get(room)?
            .publishers
            .get(identity)?
            .upgrade()
    }

    /// The room's host publication, if the host publishes.
    pub(super) fn host_publisher(&self, room: &str) -> Option<Arc<Publisher>> {
        lock(&self.rooms)
            .get(room)?
            .publishers
            .values()
            .filter_map(Weak::upgrade)
            .find(|p| p.is_host)
    }

    fn publisher_ready(&self, room: &str, publisher: &Arc<Publisher>) {
        if self.closing.load(Ordering::SeqCst) {
            return;
        }
        let mut g = lock(&self.rooms);
        let r = g
            .entry(room.to_owned())
            .or_insert_with(|| RoomProgram::new(room, self.config.default_mix.clone(), self));
        r.publishers
            .insert(publisher.identity.clone(), Arc::downgrade(publisher));
        if r.running.is_none() {
            let admission = lock(&self.slots).request(room, Instant::now());
            if let Admission::Wait { first } = admission {
                self.wait_for_slot(&mut g, room, publisher, first);
                return;
            }
            if let Err(e) = self.start(room, r) {
                warn!(room, error = %e, "cannot start the program");
                return;
            }
            // Co-hosts queued while the room waited (a slot freed before it was started).
            for p in std::mem::take(&mut r.waiting) {
                if p.identity != publisher.identity {
                    self.attach(room, r, &p);
                }
            }
        }
        self.attach(room, r, publisher);
    }

    fn publisher_gone(&self, room: &str, identity: &str) {
        let mut g = lock(&self.rooms);
        if let Some(r) = g.get_mut(room) {
            r.publishers.remove(identity);
            r.waiting.retain(|p| p.identity != identity);
            if r.waiting.is_empty() {
                lock(&self.slots).withdraw(room);
            }
        }
        let someone_waits = lock(&self.slots).someone_waits();
        let Some(run) = g.get_mut(room).and_then(|r| r.running.as_mut()) else {
            return;
        };
        if let Some(tasks) = run.feeders.remove(identity) {
            tasks.iter().for_each(|t| t.abort());
        }
        let _ = run.driver.remove_input(identity);
        if run.feeders.is_empty() && run.stop_timer.is_none() {
            // No grace period when another room waits for this slot.
            run.stop_timer = Some(if someone_waits {
                self.stop_after(room, Duration::ZERO)
            } else {
                self.stop_later(room)
            });
        }
    }
}
