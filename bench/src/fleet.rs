//! Load on the SPIRE agent API, the server's side of a fleet: N simulated
//! agents in one process (one tokio runtime, one HTTP/2 connection per agent
//! with that agent's own SVID), each syncing its entries on its own jittered
//! timer; plus X.509 signing throughput, JWT signing with a new audience per
//! call, and a restart probe. Prints one JSON object on stdout.
//!
//! ```text
//! sigil-bench fleet -admin-socket P -server HOST:PORT [-trust-domain TD]
//!     [-agents N] [-entries-per-agent K] [-interval S] [-duration S]
//!     [-rpc sync|get] [-x509 BOOL] [-jwt BOOL] [-watch BOOL]
//!     [-attest-concurrency C] [-rollout N] [-rollout-secs S]
//!     [-identity-out FILE]
//! sigil-bench sign  -admin-socket P -server HOST:PORT [-concurrency C] [-batch B] [-duration S]
//! sigil-bench jwt   -admin-socket P -server HOST:PORT [-concurrency C] [-duration S]
//! sigil-bench probe -identity FILE [-timeout S]
//! ```
//!
//! `-watch` (sigil only) also holds sigil's `WatchChanges` stream per agent:
//! a message carrying entries counts as delivery, an empty one triggers a
//! sync at once (as sigil-agent does). The rollout creates `-rollout`
//! entries, each for a random agent, spread evenly over `-rollout-secs`,
//! once every agent has synced; it measures, per entry, the time from its
//! `BatchCreateEntry` returning to its agent's first sync (or push) that
//! carries it, and counts deliveries and wake-ups reaching other agents.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};
use sigil_proto::sigil::api::server::sync::v1 as syncpb;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::BenchError;
use crate::api::{self, Admin, EntryCache, Identity, Target};
use crate::args::Args;
use crate::stats::Hist;

/// Which RPC a simulated agent syncs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncRpc {
    Sync,
    Get,
}

/// Entry point for `fleet`, `sign`, `jwt` and `probe`.
pub async fn run(cmd: &str, raw: &[String]) -> Result<(), BenchError> {
    let mut a = Args::parse(raw)?;
    let out = match cmd {
        "probe" => {
            let path: PathBuf = a.required("identity")?;
            let timeout = a.secs("timeout", 60.0)?;
            a.finish()?;
            probe(path, timeout).await?
        }
        _ => {
            let admin_socket: PathBuf = a.required("admin-socket")?;
            let server: SocketAddr = a.required("server")?;
            let td: String = a.get("trust-domain", "example.org".to_owned())?;
            let admin = Admin::connect(&admin_socket).await?;
            let target = Target::new(server, &td, admin.x509_roots().await?)?;
            let env = Env { admin, target, td };
            match cmd {
                "fleet" => {
                    let o = FleetOpts::parse(&mut a)?;
                    a.finish()?;
                    fleet(&env, o).await?
                }
                "sign" => {
                    let conc: usize = a.get("concurrency", 4)?;
                    let batch: usize = a.get("batch", 1)?;
                    let dur = a.secs("duration", 10.0)?;
                    a.finish()?;
                    signing(
                        &env,
                        Signing::X509 {
                            batch: batch.max(1),
                        },
                        conc.max(1),
                        dur,
                    )
                    .await?
                }
                "jwt" => {
                    let conc: usize = a.get("concurrency", 1)?;
                    let dur = a.secs("duration", 10.0)?;
                    a.finish()?;
                    signing(&env, Signing::Jwt, conc.max(1), dur).await?
                }
                other => return Err(BenchError::Usage(format!("unknown command {other}"))),
            }
        }
    };
    println!("{out}");
    Ok(())
}

/// What every mode needs: the admin API, the agent API, the trust domain.
struct Env {
    admin: Admin,
    target: Target,
    td: String,
}

#[derive(Debug)]
struct FleetOpts {
    agents: usize,
    entries_per_agent: usize,
    interval: Duration,
    duration: Duration,
    rpc: SyncRpc,
    x509: bool,
    jwt: bool,
    watch: bool,
    attest_concurrency: usize,
    rollout: usize,
    rollout_secs: Duration,
    identity_out: Option<PathBuf>,
}

impl FleetOpts {
    fn parse(a: &mut Args) -> Result<Self, BenchError> {
        let rpc = match a.get("rpc", "sync".to_owned())?.as_str() {
            "sync" => SyncRpc::Sync,
            "get" => SyncRpc::Get,
            other => return Err(BenchError::Usage(format!("-rpc: sync or get, not {other}"))),
        };
        Ok(FleetOpts {
            agents: a.get("agents", 10usize)?.max(1),
            entries_per_agent: a.get("entries-per-agent", 1usize)?.max(1),
            interval: a.secs("interval", 5.0)?,
            duration: a.secs("duration", 30.0)?,
            rpc,
            x509: a.get("x509", false)?,
            jwt: a.get("jwt", false)?,
            watch: a.get("watch", false)?,
            attest_concurrency: a.get("attest-concurrency", 16usize)?.max(1),
            rollout: a.get("rollout", 0usize)?,
            rollout_secs: a.secs("rollout-secs", 10.0)?,
            identity_out: a.optional("identity-out")?,
        })
    }
}

/// One simulated agent after attestation.
struct SimAgent {
    channel: Channel,
    cache: EntryCache,
    entry_ids: Vec<String>,
    csr: Vec<u8>,
}

/// State all agent tasks share during the run phase.
struct Shared {
    rpc: SyncRpc,
    interval: Duration,
    x509: bool,
    jwt: bool,
    sync: Hist,
    x509_lat: Hist,
    jwt_lat: Hist,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Rollout entry ID -> the agent it is for.
    rollout_for: Mutex<HashMap<String, usize>>,
    /// Rollout entry ID -> when its agent first held it.
    seen: Mutex<HashMap<String, Instant>>,
    /// Agents that got a rollout entry.
    affected: Mutex<HashSet<usize>>,
    /// Entries that reached an agent they were not created for.
    unexpected: AtomicU64,
    /// Push messages after the first, per agent, while the rollout ran.
    wakeups: Mutex<Vec<u64>>,
    rollout_running: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn error(&self, e: &BenchError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert_with(|| e.to_string());
        }
    }

    /// Entries that arrived at agent `idx` (by sync or push).
    fn arrived(&self, idx: usize, ids: &[String], initial: &HashSet<String>) {
        if ids.is_empty() {
            return;
        }
        let now = Instant::now();
        let rollout_for = match self.rollout_for.lock() {
            Ok(g) => g,
            Err(_) => return,
        };
        for id in ids {
            match rollout_for.get(id) {
                Some(&owner) if owner == idx => {
                    if let Ok(mut seen) = self.seen.lock() {
                        seen.entry(id.clone()).or_insert(now);
                    }
                }
                // The entry's creation may not have returned yet; only a
                // known rollout entry for another agent is unexpected.
                Some(_) => {
                    self.unexpected.fetch_add(1, Ordering::Relaxed);
                }
                None if initial.contains(id) => {}
                None => {
                    // Arrived before its BatchCreateEntry returned: record
                    // now, matched to its owner after the rollout.
                    if let Ok(mut seen) = self.seen.lock() {
                        seen.entry(format!("{idx}/{id}")).or_insert(now);
                    }
                }
            }
        }
    }
}

async fn fleet(env: &Env, o: FleetOpts) -> Result<Value, BenchError> {
    let t = Instant::now();
    let tokens = env.admin.join_tokens(o.agents, 16).await?;
    let tokens_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut entries = Vec::with_capacity(o.agents * o.entries_per_agent);
    for (i, tok) in tokens.iter().enumerate() {
        let parent = api::join_token_agent_path(tok);
        for j in 0..o.entries_per_agent {
            entries.push(api::workload_entry(
                &env.td,
                &parent,
                &format!("/fleet/a{i}/w{j}"),
                &format!("{}", 10_000 + j),
            ));
        }
    }
    let ids = env.admin.create_entries(entries).await?;
    let entries_s = t.elapsed().as_secs_f64();

    // Attest and connect every agent, then one initial sync each.
    let attest_lat = Arc::new(Hist::new());
    let initial_lat = Arc::new(Hist::new());
    let t = Instant::now();
    let mut agents: Vec<Option<SimAgent>> = (0..o.agents).map(|_| None).collect();
    let mut first_identity: Option<Identity> = None;
    {
        let mut set = JoinSet::new();
        let mut next = 0usize;
        let mut done = 0usize;
        while done < o.agents {
            while next < o.agents && set.len() < o.attest_concurrency {
                let target = env.target.clone();
                let tok = tokens[next].clone();
                let entry_ids =
                    ids[next * o.entries_per_agent..(next + 1) * o.entries_per_agent].to_vec();
                let (al, il) = (Arc::clone(&attest_lat), Arc::clone(&initial_lat));
                let rpc = o.rpc;
                let idx = next;
                set.spawn(async move {
                    let t0 = Instant::now();
                    let identity = api::attest(&target, &tok).await?;
                    al.record(t0.elapsed());
                    let channel = target.connect(Some(&identity)).await?;
                    let mut cache = EntryCache::new();
                    let t0 = Instant::now();
                    sync_once(rpc, &channel, &mut cache).await?;
                    il.record(t0.elapsed());
                    let (_, csr) = api::key_and_csr()?;
                    Ok::<_, BenchError>((
                        idx,
                        identity,
                        SimAgent {
                            channel,
                            cache,
                            entry_ids,
                            csr,
                        },
                    ))
                });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok(Ok((idx, identity, agent)))) => {
                    if idx == 0 {
                        first_identity = Some(identity);
                    }
                    agents[idx] = Some(agent);
                    done += 1;
                }
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(BenchError::Task(e.to_string())),
                None => break,
            }
        }
    }
    let attest_s = t.elapsed().as_secs_f64();
    if let (Some(path), Some(id)) = (&o.identity_out, &first_identity) {
        write_identity(path, env, id)?;
    }

    let shared = Arc::new(Shared {
        rpc: o.rpc,
        interval: o.interval,
        x509: o.x509,
        jwt: o.jwt,
        sync: Hist::new(),
        x509_lat: Hist::new(),
        jwt_lat: Hist::new(),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        rollout_for: Mutex::new(HashMap::new()),
        seen: Mutex::new(HashMap::new()),
        affected: Mutex::new(HashSet::new()),
        unexpected: AtomicU64::new(0),
        wakeups: Mutex::new(vec![0; o.agents]),
        rollout_running: std::sync::atomic::AtomicBool::new(false),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (idx, agent) in agents.into_iter().enumerate() {
        let Some(agent) = agent else { continue };
        let wake = Arc::new(Notify::new());
        if o.watch {
            tasks.spawn(watch_loop(
                Arc::clone(&shared),
                idx,
                agent.channel.clone(),
                agent.cache.keys().cloned().collect(),
                Arc::clone(&wake),
                stop_rx.clone(),
            ));
        }
        tasks.spawn(agent_loop(
            Arc::clone(&shared),
            idx,
            agent,
            wake,
            stop_rx.clone(),
        ));
    }

    let run_start = Instant::now();
    let mut rollout_json = Value::Null;
    if o.rollout > 0 {
        // Let every agent sync once on its timer before the rollout.
        tokio::time::sleep(o.interval + Duration::from_secs(1)).await;
        rollout_json = rollout(env, &o, &shared, &tokens).await?;
    }
    let elapsed = run_start.elapsed();
    if elapsed < o.duration {
        tokio::time::sleep(o.duration - elapsed).await;
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    let run_s = run_start.elapsed().as_secs_f64();

    let first_error = shared.first_error.lock().ok().and_then(|g| g.clone());
    Ok(json!({
        "mode": "fleet",
        "agents": o.agents,
        "entries": ids.len(),
        "interval_s": o.interval.as_secs_f64(),
        "rpc": match o.rpc { SyncRpc::Sync => "SyncAuthorizedEntries", SyncRpc::Get => "GetAuthorizedEntries" },
        "watch": o.watch,
        "setup": { "join_tokens_s": tokens_s, "create_entries_s": entries_s, "attest_and_first_sync_s": attest_s },
        "attest": attest_lat.json(),
        "initial_sync": initial_lat.json(),
        "run_s": run_s,
        "sync": shared.sync.json(),
        "x509": shared.x509_lat.json(),
        "jwt": shared.jwt_lat.json(),
        "errors": shared.errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "rollout": rollout_json,
    }))
}

async fn sync_once(
    rpc: SyncRpc,
    ch: &Channel,
    cache: &mut EntryCache,
) -> Result<api::SyncOutcome, BenchError> {
    match rpc {
        SyncRpc::Sync => api::sync_entries(ch, cache).await,
        SyncRpc::Get => api::get_entries(ch, cache).await,
    }
}

/// One simulated agent: sync on a jittered timer (or when its push stream
/// says so), then optionally sign one X.509-SVID and one JWT-SVID.
async fn agent_loop(
    shared: Arc<Shared>,
    idx: usize,
    mut agent: SimAgent,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let initial: HashSet<String> = agent.cache.keys().cloned().collect();
    // Spread the fleet's first syncs over one interval, as agents started
    // at different times would be.
    let mut next = shared.interval.mul_f64(rand::rng().random_range(0.0..1.0));
    let mut turn = 0usize;
    loop {
        tokio::select! {
            () = tokio::time::sleep(next) => {}
            () = wake.notified() => {}
            _ = stop.changed() => return,
        }
        next = shared.interval.mul_f64(rand::rng().random_range(0.9..1.1));
        let t0 = Instant::now();
        match sync_once(shared.rpc, &agent.channel, &mut agent.cache).await {
            Ok(out) => {
                shared.sync.record(t0.elapsed());
                shared.arrived(idx, &out.changed, &initial);
            }
            Err(e) => shared.error(&e),
        }
        if agent.entry_ids.is_empty() {
            continue;
        }
        let entry = &agent.entry_ids[turn % agent.entry_ids.len()];
        turn += 1;
        if shared.x509 {
            let t0 = Instant::now();
            match api::new_x509(&agent.channel, std::slice::from_ref(entry), &agent.csr).await {
                Ok(_) => shared.x509_lat.record(t0.elapsed()),
                Err(e) => shared.error(&e),
            }
        }
        if shared.jwt {
            let t0 = Instant::now();
            match api::new_jwt(&agent.channel, entry, "fleet".into()).await {
                Ok(()) => shared.jwt_lat.record(t0.elapsed()),
                Err(e) => shared.error(&e),
            }
        }
    }
}

/// sigil's push stream for one agent: entries it carries are delivered,
/// a message without entries wakes the agent's sync.
async fn watch_loop(
    shared: Arc<Shared>,
    idx: usize,
    ch: Channel,
    initial: HashSet<String>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut client = syncpb::sync_client::SyncClient::new(ch)
        .max_decoding_message_size(sigil_proto::MAX_MESSAGE_SIZE);
    loop {
        let stream = tokio::select! {
            r = client.watch_changes(syncpb::WatchChangesRequest { entry_changes: true }) => r,
            _ = stop.changed() => return,
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) => {
                shared.error(&BenchError::Rpc("WatchChanges", s.message().to_owned()));
                return;
            }
        };
        let mut first = true;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = stop.changed() => return,
            };
            let msg = match msg {
                Ok(Some(m)) => m,
                // Stream ended (connection max age): watch again.
                Ok(None) => break,
                Err(s) => {
                    shared.error(&BenchError::Rpc("WatchChanges", s.message().to_owned()));
                    return;
                }
            };
            if first {
                first = false;
                continue;
            }
            if shared.rollout_running.load(Ordering::Relaxed)
                && let Ok(mut w) = shared.wakeups.lock()
                && let Some(c) = w.get_mut(idx)
            {
                *c += 1;
            }
            match msg.entries {
                Some(ch) if !ch.upserted.is_empty() => {
                    let ids: Vec<String> = ch.upserted.into_iter().map(|e| e.id).collect();
                    shared.arrived(idx, &ids, &initial);
                }
                Some(ch) if !ch.removed.is_empty() => {}
                _ => wake.notify_one(),
            }
        }
    }
}

/// Creates the rollout's entries over the rollout window and waits until
/// each reached its agent (or two sync intervals after the last creation).
async fn rollout(
    env: &Env,
    o: &FleetOpts,
    shared: &Arc<Shared>,
    tokens: &[String],
) -> Result<Value, BenchError> {
    // Ten creations a second, each a batch.
    let ticks = ((o.rollout_secs.as_secs_f64() * 10.0).ceil() as usize).max(1);
    let per_tick = o.rollout.div_ceil(ticks);
    let mut created_at: HashMap<String, Instant> = HashMap::new();
    let mut owners: HashMap<String, usize> = HashMap::new();
    let mut rng_owner = {
        let mut rng = rand::rng();
        (0..o.rollout)
            .map(|_| rng.random_range(0..o.agents))
            .collect::<Vec<_>>()
            .into_iter()
    };
    shared.rollout_running.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let mut made = 0usize;
    let mut tick = 0usize;
    while made < o.rollout {
        let at = start + o.rollout_secs.mul_f64(tick as f64 / ticks as f64);
        tokio::time::sleep_until(at.into()).await;
        tick += 1;
        let n = per_tick.min(o.rollout - made);
        let mut batch = Vec::with_capacity(n);
        let mut batch_owner = Vec::with_capacity(n);
        for k in 0..n {
            let owner = rng_owner.next().unwrap_or(0);
            batch.push(api::workload_entry(
                &env.td,
                &api::join_token_agent_path(&tokens[owner]),
                &format!("/rollout/a{owner}/p{}", made + k),
                "20000",
            ));
            batch_owner.push(owner);
        }
        let ids = env.admin.create_entries(batch).await?;
        let now = Instant::now();
        if let Ok(mut r) = shared.rollout_for.lock() {
            for (id, owner) in ids.iter().zip(&batch_owner) {
                r.insert(id.clone(), *owner);
            }
        }
        if let Ok(mut a) = shared.affected.lock() {
            a.extend(batch_owner.iter().copied());
        }
        for (id, owner) in ids.into_iter().zip(batch_owner) {
            created_at.insert(id.clone(), now);
            owners.insert(id, owner);
        }
        made += n;
    }
    let create_s = start.elapsed().as_secs_f64();
    // Wait for delivery, at most two intervals plus slack past the last one.
    let deadline = Instant::now() + o.interval * 2 + Duration::from_secs(5);
    loop {
        let delivered = pending_seen(shared, &owners).len();
        if delivered >= created_at.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shared.rollout_running.store(false, Ordering::Relaxed);
    let seen = pending_seen(shared, &owners);
    let hist = Hist::new();
    for (id, at) in &seen {
        if let Some(c) = created_at.get(id) {
            hist.record(at.saturating_duration_since(*c));
        }
    }
    let affected = shared
        .affected
        .lock()
        .map(|a| a.clone())
        .unwrap_or_default();
    let (mut unaffected_wakeups, mut affected_wakeups) = (0u64, 0u64);
    if let Ok(w) = shared.wakeups.lock() {
        for (i, c) in w.iter().enumerate() {
            if affected.contains(&i) {
                affected_wakeups += c;
            } else {
                unaffected_wakeups += c;
            }
        }
    }
    Ok(json!({
        "entries": created_at.len(),
        "create_window_s": create_s,
        "affected_agents": affected.len(),
        "delivered": seen.len(),
        "propagation": hist.json(),
        "unexpected_deliveries": shared.unexpected.load(Ordering::Relaxed),
        "push_messages_to_affected": affected_wakeups,
        "push_messages_to_unaffected": unaffected_wakeups,
    }))
}

/// Rollout entries seen by their own agent, with when; also matches
/// entries that arrived before their creation call returned.
fn pending_seen(shared: &Shared, owners: &HashMap<String, usize>) -> HashMap<String, Instant> {
    let mut out = HashMap::new();
    if let Ok(seen) = shared.seen.lock() {
        for (id, owner) in owners {
            if let Some(t) = seen.get(id) {
                out.insert(id.clone(), *t);
            }
            if let Some(t) = seen.get(&format!("{owner}/{id}")) {
                let e = out.entry(id.clone()).or_insert(*t);
                if *t < *e {
                    *e = *t;
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy)]
enum Signing {
    X509 { batch: usize },
    Jwt,
}

/// Signing throughput at the server: one agent, one entry, `conc` workers
/// each on its own connection, for `dur`. X.509 reuses one CSR per worker
/// (the server still verifies it on every call); JWT asks a new audience
/// every call so nothing can be cached.
async fn signing(
    env: &Env,
    kind: Signing,
    conc: usize,
    dur: Duration,
) -> Result<Value, BenchError> {
    let token = env
        .admin
        .join_tokens(1, 1)
        .await?
        .pop()
        .ok_or_else(|| BenchError::Rpc("CreateJoinToken", "no token".into()))?;
    let ids = env
        .admin
        .create_entries(vec![api::workload_entry(
            &env.td,
            &api::join_token_agent_path(&token),
            "/sign/w0",
            "30000",
        )])
        .await?;
    let entry = ids
        .into_iter()
        .next()
        .ok_or_else(|| BenchError::Rpc("BatchCreateEntry", "no entry".into()))?;
    let identity = api::attest(&env.target, &token).await?;
    // Wait until the server authorizes the entry for this agent (SPIRE's
    // entry cache refreshes on its own schedule).
    let ch = env.target.connect(Some(&identity)).await?;
    let t = Instant::now();
    loop {
        let mut cache = EntryCache::new();
        if api::sync_entries(&ch, &mut cache).await?.total > 0 {
            break;
        }
        if t.elapsed() > Duration::from_secs(60) {
            return Err(BenchError::Timeout(
                "signing agent never got its entry".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lat = Arc::new(Hist::new());
    let errors = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut set = JoinSet::new();
    let mut chans = Vec::with_capacity(conc);
    for _ in 0..conc {
        chans.push((
            env.target.connect(Some(&identity)).await?,
            api::key_and_csr()?.1,
        ));
    }
    let start = Instant::now();
    let deadline = start + dur;
    for (ch, csr) in chans {
        let (lat, errors, seq, fe, entry) = (
            Arc::clone(&lat),
            Arc::clone(&errors),
            Arc::clone(&seq),
            Arc::clone(&first_error),
            entry.clone(),
        );
        set.spawn(async move {
            let mut ok = 0u64;
            let ids = match kind {
                Signing::X509 { batch } => vec![entry.clone(); batch],
                Signing::Jwt => Vec::new(),
            };
            while Instant::now() < deadline {
                let t0 = Instant::now();
                let r = match kind {
                    Signing::X509 { .. } => api::new_x509(&ch, &ids, &csr).await.map(|n| n as u64),
                    Signing::Jwt => {
                        let aud = format!("aud-{}", seq.fetch_add(1, Ordering::Relaxed));
                        api::new_jwt(&ch, &entry, aud).await.map(|()| 1)
                    }
                };
                match r {
                    Ok(n) => {
                        lat.record(t0.elapsed());
                        ok += n;
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut f) = fe.lock() {
                            f.get_or_insert_with(|| e.to_string());
                        }
                        // Do not spin on a broken server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            ok
        });
    }
    let mut total = 0u64;
    while let Some(r) = set.join_next().await {
        total += r.map_err(|e| BenchError::Task(e.to_string()))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let (mode, batch) = match kind {
        Signing::X509 { batch } => ("sign", batch),
        Signing::Jwt => ("jwt", 1),
    };
    let first_error = first_error.lock().ok().and_then(|g| g.clone());
    Ok(json!({
        "mode": mode,
        "concurrency": conc,
        "batch": batch,
        "signed": total,
        "secs": secs,
        "per_s": total as f64 / secs.max(1e-9),
        "latency": lat.json(),
        "errors": errors.load(Ordering::Relaxed),
        "first_error": first_error,
    }))
}

/// Saves one agent's identity and the server's address and roots, so
/// `probe` can later sync as that agent (the restart measurement).
fn write_identity(path: &PathBuf, env: &Env, id: &Identity) -> Result<(), BenchError> {
    let v = json!({
        "server": env.target.addr.to_string(),
        "trust_domain": env.td,
        "roots": env.target.roots.iter().map(|r| hex(r)).collect::<Vec<_>>(),
        "chain": id.chain.iter().map(|c| hex(c)).collect::<Vec<_>>(),
        "key": hex(&id.key_der),
    });
    std::fs::write(path, v.to_string()).map_err(|e| BenchError::Io(path.display().to_string(), e))
}

/// Syncs as a saved agent until one sync succeeds; the time from start.
async fn probe(path: PathBuf, timeout: Duration) -> Result<Value, BenchError> {
    let start = Instant::now();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BenchError::Io(path.display().to_string(), e))?;
    let bad = |what: &str| BenchError::Usage(format!("{}: bad {what}", path.display()));
    let v: Value = serde_json::from_str(&text).map_err(|_| bad("JSON"))?;
    let hexes = |k: &str| -> Result<Vec<Vec<u8>>, BenchError> {
        v[k].as_array()
            .ok_or_else(|| bad(k))?
            .iter()
            .map(|x| x.as_str().and_then(unhex).ok_or_else(|| bad(k)))
            .collect()
    };
    let addr: SocketAddr = v["server"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("server"))?;
    let td = v["trust_domain"]
        .as_str()
        .ok_or_else(|| bad("trust_domain"))?;
    let target = Target::new(addr, td, hexes("roots")?)?;
    let identity = Identity {
        chain: hexes("chain")?,
        key_der: v["key"]
            .as_str()
            .and_then(unhex)
            .ok_or_else(|| bad("key"))?,
    };
    let mut last = String::new();
    while start.elapsed() < timeout {
        match target.connect(Some(&identity)).await {
            Ok(ch) => {
                let mut cache = EntryCache::new();
                match api::sync_entries(&ch, &mut cache).await {
                    Ok(out) => {
                        return Ok(json!({
                            "mode": "probe",
                            "probe_ms": start.elapsed().as_secs_f64() * 1000.0,
                            "entries": out.total,
                        }));
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BenchError::Timeout(format!(
        "no sync within {timeout:?}: {last}"
    )))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
