//! The agent's main line: network config, lease, device, subnet file, then the
//! watch loop (flannel's `main.go`, `LocalManager` and the vxlan `network.Run`).

use super::config::{NetworkConfig, Subnet};
use super::device::{self, ExternalIface, Vtep, ENCAP_OVERHEAD};
use super::lease::{derived_mac, Change, Lease, LeaseAttrs, LeaseWatcher};
use super::log::{error, info, warning};
use super::traffic;
use super::Options;
use crate::etcd::{self, Client, EventKind, Watch};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// flannel's lease TTL.
const SUBNET_TTL: Duration = Duration::from_secs(24 * 3600);
/// How often creating a lease may lose a race before giving up (flannel's raceRetries).
const RACE_RETRIES: usize = 10;
const WATCH_POLL: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Etcd(#[from] etcd::Error),
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM and SIGINT set the returned flag (and interrupt blocking calls).
pub fn install_signal_handlers() -> &'static AtomicBool {
    info!("Installing signal handlers");
    let action = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            warning!("cannot handle {sig}: {e}");
        }
    }
    &STOP
}

/// Sleeps `d` in small steps; returns true if asked to stop meanwhile.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    stop.load(Ordering::SeqCst)
}

/// Our own lease.
#[derive(Debug, Clone)]
struct Own {
    subnet: Subnet,
    key: String,
    attrs: LeaseAttrs,
    /// The etcd lease; 0 for a reservation.
    lease_id: i64,
    /// When the lease expires; None for a reservation.
    expires: Option<SystemTime>,
}

struct Agent<'a> {
    opts: &'a Options,
    stop: &'a AtomicBool,
    etcd: Client,
    config: NetworkConfig,
    ext: ExternalIface,
    public_ip: Ipv4Addr,
    renew_margin: Duration,
}

fn subnets_prefix(opts: &Options) -> String {
    format!("{}/subnets/", opts.etcd_prefix)
}

/// A simple xorshift generator seeded from the clock, the PID and our address, for
/// picking a random free subnet as flannel does.
struct Random(u64);

impl Random {
    fn new(salt: Ipv4Addr) -> Random {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos ^ (u64::from(std::process::id()) << 32) ^ u64::from(u32::from(salt));
        Random(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Runs the agent until SIGTERM/SIGINT (`stop`) or until its lease is revoked.
pub fn run(opts: &Options, stop: &AtomicBool) -> Result<(), AgentError> {
    if opts.renew_margin_minutes == 0 || opts.renew_margin_minutes >= SUBNET_TTL.as_secs() / 60 {
        return Err(AgentError::Setup(format!(
            "-subnet-lease-renew-margin must be between 1 and {} minutes",
            SUBNET_TTL.as_secs() / 60 - 1
        )));
    }
    let ext = external_iface(opts)?;
    info!("Using interface with name {} and address {}", ext.name, ext.ip);
    let public_ip = match &opts.public_ip {
        Some(p) => {
            let ip = p
                .parse()
                .map_err(|_| AgentError::Setup(format!("invalid public IP address: {p}")))?;
            info!("Using {ip} as external address");
            ip
        }
        None => {
            info!("Defaulting external address to interface address ({})", ext.ip);
            ext.ip
        }
    };
    let etcd = Client::from_list(&opts.etcd_endpoints)?;
    info!("Created subnet manager: Etcd Local Manager with Previous Subnet: None");
    let Some(config) = wait_for_config(&etcd, opts, stop) else {
        info!("Exiting cleanly...");
        return Ok(());
    };
    info!("Found network config - Backend type: {}", config.backend_type);
    if config.backend_type != "vxlan" {
        return Err(AgentError::Setup(format!(
            "backend type {:?} is not supported by the built-in flannel agent (only vxlan)",
            config.backend_type
        )));
    }
    let vx = &config.vxlan;
    info!(
        "VXLAN config: VNI={} Port={} GBP={} Learning={} DirectRouting={}",
        vx.vni, vx.port, vx.gbp, vx.learning, vx.direct_routing
    );
    if vx.direct_routing {
        warning!("DirectRouting is not supported by the built-in flannel agent: every host is reached over VXLAN");
    }
    let agent = Agent {
        opts,
        stop,
        etcd,
        config,
        ext,
        public_ip,
        renew_margin: Duration::from_secs(opts.renew_margin_minutes * 60),
    };
    agent.run()
}

fn external_iface(opts: &Options) -> Result<ExternalIface, AgentError> {
    if opts.iface.is_empty() {
        info!("Determining IP address of default interface");
        return device::find_iface(None).map_err(AgentError::Setup);
    }
    let mut errors = Vec::new();
    for spec in &opts.iface {
        info!("Searching for interface using {spec}");
        match device::find_iface(Some(spec)) {
            Ok(i) => return Ok(i),
            Err(e) => {
                error!("Could not find valid interface matching {spec}: {e}");
                errors.push(e);
            }
        }
    }
    Err(AgentError::Setup(format!(
        "failed to find any valid interface to use: {}",
        errors.join("; ")
    )))
}

/// Reads `<prefix>/config`, retrying every second until it is there and valid;
/// None if asked to stop first.
fn wait_for_config(etcd: &Client, opts: &Options, stop: &AtomicBool) -> Option<NetworkConfig> {
    let key = format!("{}/config", opts.etcd_prefix);
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match etcd.get(&key) {
            Ok((Some(kv), _)) => match NetworkConfig::parse(&String::from_utf8_lossy(&kv.value)) {
                Ok(c) => return Some(c),
                Err(e) => error!("Couldn't fetch network config: {e}"),
            },
            Ok((None, _)) => error!(
                "Couldn't fetch network config: flannel config not found in etcd store ({key}). Did you create your config using etcdv3 API?"
            ),
            Err(e) => error!("Couldn't fetch network config: {e}"),
        }
        if nap(Duration::from_secs(1), stop) {
            return None;
        }
    }
}

/// Leases in a listing of `<prefix>/subnets/`; bad entries are skipped with a warning.
fn parse_leases(kvs: &[etcd::KeyValue]) -> Vec<Lease> {
    kvs.iter()
        .filter_map(|kv| {
            let Some(subnet) = Subnet::from_key(&kv.key) else {
                warning!("Ignoring bad subnet node: failed to parse subnet key {}", kv.key);
                return None;
            };
            match LeaseAttrs::parse(&kv.value) {
                Ok(attrs) => Some(Lease {
                    subnet,
                    attrs,
                    lease_id: kv.lease,
                }),
                Err(e) => {
                    warning!("Ignoring bad subnet node {}: {e}", kv.key);
                    None
                }
            }
        })
        .collect()
}

fn write_subnet_file(path: &Path, config: &NetworkConfig, sn: &Subnet, mtu: u32, ip_masq: bool) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}"));
    let contents = format!(
        "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n",
        config.network,
        sn.nth(1),
        sn.len
    );
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

impl Agent<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn dev(&self) -> String {
        self.config.vxlan.device()
    }

    fn mtu(&self) -> u32 {
        self.ext.mtu.saturating_sub(ENCAP_OVERHEAD)
    }

    fn key(&self, sn: &Subnet) -> String {
        format!("{}{}", subnets_prefix(self.opts), sn.key_name())
    }

    fn run(&self) -> Result<(), AgentError> {
        let Some(mut own) = self.acquire_with_retries()? else {
            info!("Exiting cleanly...");
            return Ok(());
        };
        device::configure(&self.dev(), own.subnet.ip)
            .map_err(|e| AgentError::Setup(format!("failed to configure interface {}: {e}", self.dev())))?;
        // As flanneld, the traffic rules are in place before the subnet file says we are
        // ready (pods' traffic relies on them). Deleting what an earlier run in nftables
        // mode left comes after it: nothing relies on that, and `up` waits on the file.
        let rules = traffic::rules(&self.config, self.opts, &own.subnet);
        if rules.needed_when_ready() {
            traffic::apply(&rules).map_err(AgentError::Setup)?;
        }
        match write_subnet_file(
            &self.opts.subnet_file,
            &self.config,
            &own.subnet,
            self.mtu(),
            self.opts.ip_masq,
        ) {
            Ok(()) => info!("Wrote subnet file to {}", self.opts.subnet_file.display()),
            Err(e) => warning!("Failed to write subnet file: {e}"),
        }
        if !rules.needed_when_ready() {
            traffic::apply(&rules).map_err(AgentError::Setup)?;
        }
        info!("Running backend.");
        info!("watching for new subnet leases");
        let revoked = self.watch_loop(&mut own);
        if revoked {
            error!("Lease has been revoked. Shutting down daemon.");
        }
        info!("Exiting cleanly...");
        Ok(())
    }

    /// Acquires a lease, retrying while etcd is unreachable; None if asked to stop.
    fn acquire_with_retries(&self) -> Result<Option<Own>, AgentError> {
        let mut backoff = BACKOFF_MIN;
        loop {
            if self.stopped() {
                return Ok(None);
            }
            match self.acquire() {
                Ok(own) => return Ok(Some(own)),
                Err(AgentError::Etcd(e)) if e.is_transient() => {
                    error!("failed to acquire lease: {e}; retrying");
                    if nap(backoff, self.stop) {
                        return Ok(None);
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The VtepMAC to use: the one our lease already carries, else the existing
    /// device's, else one derived from the public IP.
    fn vtep_mac(&self, mine: Option<&Lease>) -> String {
        mine.and_then(|l| l.attrs.vxlan_attrs())
            .map(|v| v.vtep_mac)
            .or_else(|| device::existing_mac(&self.dev()))
            .unwrap_or_else(|| derived_mac(self.public_ip, self.config.vxlan.vni))
    }

    fn ensure_device(&self, mac: &str) -> Result<(), AgentError> {
        let vx = &self.config.vxlan;
        device::ensure_vtep(&Vtep {
            name: self.dev(),
            vni: vx.vni,
            local: self.ext.ip,
            port: vx.dst_port(),
            dev: self.ext.name.clone(),
            mtu: self.mtu(),
            mac: mac.to_string(),
            learning: vx.learning,
            gbp: vx.gbp,
        })
        .map_err(|e| AgentError::Setup(format!("failed to create VXLAN device {}: {e}", self.dev())))
    }

    /// flannel's `tryAcquireLease`, with the device created once the VtepMAC is known.
    fn acquire(&self) -> Result<Own, AgentError> {
        let mut rng = Random::new(self.public_ip);
        let mut device_ready = false;
        for _ in 0..RACE_RETRIES {
            let listing = self.etcd.get_prefix(&subnets_prefix(self.opts))?;
            let mut leases = parse_leases(&listing.kvs);
            let mine = leases.iter().find(|l| l.attrs.public_ip == self.public_ip).cloned();
            let mac = self.vtep_mac(mine.as_ref());
            if !device_ready {
                self.ensure_device(&mac)?;
                device_ready = true;
            }
            let attrs = LeaseAttrs::vxlan(self.public_ip, self.config.vxlan.vni, &mac);
            let value = attrs.to_json();
            if let Some(l) = mine {
                let key = self.key(&l.subnet);
                if self.config.fits(&l.subnet) {
                    info!(
                        "Found lease (ip: {} ipv6: ::/0) for current IP ({}), reusing",
                        l.subnet, self.public_ip
                    );
                    let (lease_id, expires) = if l.is_reservation() {
                        // A reservation stays one: no TTL.
                        self.etcd.put(&key, value.as_bytes(), 0)?;
                        (0, None)
                    } else {
                        let lease = self.etcd.grant(SUBNET_TTL.as_secs() as i64)?;
                        self.etcd.put(&key, value.as_bytes(), lease.id)?;
                        (
                            lease.id,
                            Some(SystemTime::now() + Duration::from_secs(lease.ttl as u64)),
                        )
                    };
                    info!(
                        "Acquired lease {}{} VtepMAC {mac}",
                        l.subnet,
                        if lease_id == 0 { " (reservation)" } else { "" }
                    );
                    return Ok(Own {
                        subnet: l.subnet,
                        key,
                        attrs,
                        lease_id,
                        expires,
                    });
                }
                info!(
                    "Found lease ({}) for current IP ({}) but not compatible with current config, deleting",
                    l.subnet, self.public_ip
                );
                self.etcd.delete(&key)?;
                leases.retain(|x| x.subnet != l.subnet);
            }
            info!(
                "Picking subnet in range {} ... {}",
                self.config.subnet_min, self.config.subnet_max
            );
            let taken: Vec<Subnet> = leases.iter().map(|l| l.subnet).collect();
            let free = self.config.free_subnets(&taken);
            if free.is_empty() {
                return Err(AgentError::Setup("failed to acquire lease: out of subnets".into()));
            }
            let sn = free[rng.below(free.len())];
            let key = self.key(&sn);
            let lease = self.etcd.grant(SUBNET_TTL.as_secs() as i64)?;
            if self.etcd.create(&key, value.as_bytes(), lease.id)? {
                info!(
                    "Allocated lease (ip: {sn} ipv6: ::/0) to current node ({})",
                    self.public_ip
                );
                info!("Acquired lease {sn} VtepMAC {mac}");
                return Ok(Own {
                    subnet: sn,
                    key,
                    attrs,
                    lease_id: lease.id,
                    expires: Some(SystemTime::now() + Duration::from_secs(lease.ttl as u64)),
                });
            }
            // Someone took it meanwhile: try again.
            if let Err(e) = self.etcd.revoke(lease.id) {
                warning!("revoking unused lease {:x}: {e}", lease.id);
            }
        }
        Err(AgentError::Setup(
            "failed to acquire lease: Max retries reached trying to acquire a subnet".into(),
        ))
    }

    /// When to renew `own`, if it has a TTL.
    fn renew_at(&self, own: &Own) -> Option<SystemTime> {
        own.expires.map(|e| e.checked_sub(self.renew_margin).unwrap_or(e))
    }

    /// flannel's `RenewLease`: a fresh TTL lease and the attributes put again.
    fn renew(&self, own: &mut Own) -> Result<(), etcd::Error> {
        let lease = self.etcd.grant(SUBNET_TTL.as_secs() as i64)?;
        self.etcd.put(&own.key, own.attrs.to_json().as_bytes(), lease.id)?;
        // As flannel, the previous lease is left to expire: it may hold other keys.
        own.lease_id = lease.id;
        own.expires = Some(SystemTime::now() + Duration::from_secs(lease.ttl as u64));
        Ok(())
    }

    /// Watches the leases until stopped; returns true if our own lease was revoked.
    fn watch_loop(&self, own: &mut Own) -> bool {
        let dev = self.dev();
        let mut peers = LeaseWatcher::new(own.subnet);
        let mut watch: Option<Watch> = None;
        let mut backoff = BACKOFF_MIN;
        let mut renew_retry: Option<SystemTime> = None;
        let mut trimmed = false;
        while !self.stopped() {
            if watch.is_none() {
                match self.resync(own, &mut peers, &dev) {
                    Ok(Some(w)) => {
                        watch = Some(w);
                        backoff = BACKOFF_MIN;
                        if !trimmed {
                            trim_code_pages();
                            trimmed = true;
                        }
                    }
                    Ok(None) => return true,
                    Err(e) => {
                        warning!("failed to retrieve subnet leases: {e}; retrying");
                        if nap(backoff, self.stop) {
                            break;
                        }
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let w = watch.as_mut().expect("set above");
            match w.next(WATCH_POLL) {
                Ok(None) => {}
                Ok(Some(resp)) if resp.canceled => {
                    if resp.compact_revision != 0 {
                        warning!(
                            "etcd watch for {} fell behind compaction (revision {}), re-listing and resuming",
                            subnets_prefix(self.opts),
                            resp.compact_revision
                        );
                    } else {
                        warning!(
                            "etcd watch for {} was canceled ({}), re-listing",
                            subnets_prefix(self.opts),
                            resp.cancel_reason
                        );
                    }
                    watch = None;
                }
                Ok(Some(resp)) => {
                    let mut changes = Vec::new();
                    for ev in &resp.events {
                        let Some(subnet) = Subnet::from_key(&ev.kv.key) else {
                            continue;
                        };
                        if subnet == own.subnet {
                            match ev.kind {
                                EventKind::Delete => return true,
                                EventKind::Put => self.own_put(own, ev.kv.lease),
                            }
                            continue;
                        }
                        match ev.kind {
                            EventKind::Put => match LeaseAttrs::parse(&ev.kv.value) {
                                Ok(attrs) => changes.extend(peers.put(subnet, attrs)),
                                Err(e) => warning!("Ignoring bad subnet node {}: {e}", ev.kv.key),
                            },
                            EventKind::Delete => changes.extend(peers.delete(subnet)),
                        }
                    }
                    if !self.apply(&dev, &changes) {
                        // Forget what was applied and converge again from a fresh listing.
                        peers = LeaseWatcher::new(own.subnet);
                        watch = None;
                        if nap(BACKOFF_MAX, self.stop) {
                            break;
                        }
                    }
                }
                Err(e) => {
                    warning!(
                        "etcd watch channel for {} closed ({e}), re-listing",
                        subnets_prefix(self.opts)
                    );
                    watch = None;
                    if nap(backoff, self.stop) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            let due = renew_retry.or_else(|| self.renew_at(own));
            if due.is_some_and(|t| SystemTime::now() >= t) {
                match self.renew(own) {
                    Ok(()) => {
                        renew_retry = None;
                        info!("Lease renewed, new expiration: {}", fmt_time(own.expires));
                    }
                    Err(e) => {
                        error!("Error renewing lease (trying again in 1 min): {e}");
                        renew_retry = Some(SystemTime::now() + Duration::from_secs(60));
                    }
                }
            }
        }
        false
    }

    /// Our own key was put (by us renewing, or by someone else).
    fn own_put(&self, own: &mut Own, lease_id: i64) {
        if lease_id == own.lease_id {
            return;
        }
        if lease_id == 0 {
            info!("Lease {} is now a reservation: no renewal needed", own.subnet);
            own.lease_id = 0;
            own.expires = None;
            return;
        }
        match self.etcd.time_to_live(lease_id) {
            Ok(ttl) if ttl > 0 => {
                own.lease_id = lease_id;
                own.expires = Some(SystemTime::now() + Duration::from_secs(ttl as u64));
                let wait = self
                    .renew_at(own)
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or_default();
                info!("Waiting for {}s to renew lease", wait.as_secs());
            }
            Ok(_) => {}
            Err(e) => warning!("Could not read ttl: {e}"),
        }
    }

    /// Lists the leases, brings the kernel in step with them and starts a watch
    /// right after the listing's revision. None if our own lease is gone.
    fn resync(&self, own: &Own, peers: &mut LeaseWatcher, dev: &str) -> Result<Option<Watch>, etcd::Error> {
        let listing = self.etcd.get_prefix(&subnets_prefix(self.opts))?;
        let leases = parse_leases(&listing.kvs);
        if !leases.iter().any(|l| l.subnet == own.subnet) {
            return Ok(None);
        }
        let snapshot: Vec<(Subnet, LeaseAttrs)> = leases.into_iter().map(|l| (l.subnet, l.attrs)).collect();
        let changes = peers.reset(&snapshot);
        self.apply(dev, &changes);
        // Routes of leases that vanished while nobody watched.
        let keep: Vec<Subnet> = peers.known().map(|(s, _)| *s).collect();
        match device::stale_routes(dev, &keep) {
            Ok(stale) => {
                for dst in stale {
                    info!("Removing stale route to {dst}");
                    if let Err(e) = device::apply(&device::Batch {
                        ip_del: vec![format!("route del {dst} dev {dev}")],
                        ..Default::default()
                    }) {
                        warning!("{e}");
                    }
                }
            }
            Err(e) => warning!("listing routes on {dev}: {e}"),
        }
        self.etcd
            .watch_prefix(&subnets_prefix(self.opts), listing.revision + 1)
            .map(Some)
    }

    /// Logs and applies peer changes; false if the kernel refused some.
    fn apply(&self, dev: &str, changes: &[Change]) -> bool {
        if changes.is_empty() {
            return true;
        }
        for c in changes {
            match c {
                Change::Added {
                    subnet,
                    attrs,
                    previous: None,
                } => info!(
                    "Subnet added: {subnet} via {} VtepMAC {}",
                    attrs.public_ip,
                    vtep_mac_of(attrs)
                ),
                Change::Added {
                    subnet,
                    attrs,
                    previous: Some(_),
                } => info!(
                    "Subnet changed: {subnet} via {} VtepMAC {}",
                    attrs.public_ip,
                    vtep_mac_of(attrs)
                ),
                Change::Removed { subnet, attrs } => info!(
                    "Subnet removed: {subnet} via {} VtepMAC {}",
                    attrs.public_ip,
                    vtep_mac_of(attrs)
                ),
            }
        }
        match device::apply(&device::batch(dev, changes)) {
            Ok(()) => true,
            Err(e) => {
                error!("failed to update routes/neighbours/fdb on {dev}: {e}");
                false
            }
        }
    }
}

/// Unmaps the resident pages of every executable file mapping (program and libraries)
/// once start-up is over, so the long-running agent's RSS is its steady-state working
/// set rather than everything argument parsing and setup touched. The pages stay in the
/// page cache and fault back in when executed again. Only `r-xp` mappings are touched:
/// their pages are never written (no text relocations), so dropping them loses nothing.
fn trim_code_pages() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).unwrap_or_default();
        if perms != "r-xp" || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: an unmodified, read-only, file-backed private mapping of this process;
        // MADV_DONTNEED only drops its page-table entries, later accesses re-read the file.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
        }
    }
}

fn vtep_mac_of(attrs: &LeaseAttrs) -> String {
    attrs
        .vxlan_attrs()
        .map(|v| v.vtep_mac)
        .unwrap_or_else(|| "(none)".into())
}

fn fmt_time(t: Option<SystemTime>) -> String {
    match t {
        Some(t) => format!("{} UTC", super::log::timestamp(t)),
        None => "never".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_subnet_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        let c = NetworkConfig::parse(
            r#"{"Network":"11.0.0.0/8","SubnetLen":20,"SubnetMin":"11.10.0.0","SubnetMax":"11.99.0.0","Backend":{"Type":"vxlan","VNI":100,"Port":8472}}"#,
        )
        .unwrap();
        write_subnet_file(&path, &c, &"11.10.16.0/20".parse().unwrap(), 1450, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "FLANNEL_NETWORK=11.0.0.0/8\nFLANNEL_SUBNET=11.10.16.1/20\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        // -ip-masq: flannel masquerades, so the CNI plugin tells its delegate not to.
        write_subnet_file(&path, &c, &"11.10.16.0/20".parse().unwrap(), 1450, true).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"));
        assert!(
            !path.with_file_name(".subnet.env").exists(),
            "temporary file renamed away"
        );
    }

    #[test]
    fn random_picks_stay_in_range() {
        let mut r = Random::new(Ipv4Addr::new(10, 0, 0, 3));
        for n in 1..50 {
            assert!(r.below(n) < n);
        }
    }

    #[test]
    fn parses_listed_leases() {
        let kvs = vec![
            etcd::KeyValue {
                key: "/coreos.com/network/subnets/11.10.0.0-20".into(),
                value: LeaseAttrs::vxlan(Ipv4Addr::new(10, 0, 0, 3), 100, "0a:00:00:00:00:03")
                    .to_json()
                    .into_bytes(),
                lease: 0,
                ..Default::default()
            },
            etcd::KeyValue {
                key: "/coreos.com/network/subnets/garbage".into(),
                value: b"{}".to_vec(),
                ..Default::default()
            },
            etcd::KeyValue {
                key: "/coreos.com/network/subnets/11.10.16.0-20".into(),
                value: b"not json".to_vec(),
                lease: 5,
                ..Default::default()
            },
        ];
        let leases = parse_leases(&kvs);
        assert_eq!(leases.len(), 1);
        assert!(leases[0].is_reservation());
        assert_eq!(leases[0].subnet.to_string(), "11.10.0.0/20");
    }

    #[test]
    fn formats_expiry_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_626_526);
        assert_eq!(fmt_time(Some(t)), "1125 17:08:46.000000 UTC");
        assert_eq!(fmt_time(None), "never");
    }
}
