//! Kubelet-shaped cgroups for tests of Kubernetes workload attestation.
//!
//! There is no kubelet here, so tests create the cgroups a kubelet would
//! (cgroup v2 with the systemd driver: `kubepods.slice/
//! kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
//! cri-containerd-<id>.scope`; cgroup v1 with cgroupfs:
//! `pids/kubepods/besteffort/pod<uid>/<id>`) and move real processes into
//! them. Creating cgroups needs root (CI runs as root).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Whether this process may create cgroups (it runs as root).
pub fn can_create_cgroups() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Which cgroup hierarchy the kubelet-shaped cgroups go in.
#[derive(Clone, Copy, Debug)]
pub enum Hierarchy {
    /// Unified hierarchy, systemd cgroup driver layout.
    V2,
    /// The v1 `pids` controller, cgroupfs driver layout.
    V1Pids,
}

impl Hierarchy {
    pub fn detect() -> Hierarchy {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            Hierarchy::V2
        } else {
            Hierarchy::V1Pids
        }
    }

    pub fn mount(self) -> PathBuf {
        match self {
            Hierarchy::V2 => PathBuf::from("/sys/fs/cgroup"),
            Hierarchy::V1Pids => PathBuf::from("/sys/fs/cgroup/pids"),
        }
    }

    /// The kubelet's directories for a besteffort pod's container.
    pub fn pod_container_path(self, pod_uid: &str, container_id: &str) -> Vec<String> {
        match self {
            Hierarchy::V2 => vec![
                "kubepods.slice".into(),
                "kubepods-besteffort.slice".into(),
                format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_")),
                format!("cri-containerd-{container_id}.scope"),
            ],
            Hierarchy::V1Pids => vec![
                "kubepods".into(),
                "besteffort".into(),
                format!("pod{pod_uid}"),
                container_id.into(),
            ],
        }
    }

    /// This test process's own cgroup in the hierarchy, where processes go
    /// back to before the test's cgroups are removed.
    pub fn own_cgroup(self) -> PathBuf {
        let text = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
        let path = text
            .lines()
            .find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let wanted = match self {
                    Hierarchy::V2 => controllers.is_empty(),
                    Hierarchy::V1Pids => controllers.split(',').any(|c| c == "pids"),
                };
                wanted.then(|| path.to_owned())
            })
            .expect("this process's cgroup in the hierarchy");
        self.mount().join(path.trim_start_matches('/'))
    }
}

/// A pod's container cgroup, created for one test and removed (processes
/// moved back, directories removed) when dropped, even after a failure.
pub struct PodCgroup {
    hierarchy: Hierarchy,
    /// Directories this test created, outermost first.
    created: Vec<PathBuf>,
    leaf: PathBuf,
}

impl PodCgroup {
    /// The container's cgroup directory.
    pub fn path(&self) -> &Path {
        &self.leaf
    }
}

impl PodCgroup {
    pub fn create(hierarchy: Hierarchy, pod_uid: &str, container_id: &str) -> PodCgroup {
        let mut cgroup = PodCgroup {
            hierarchy,
            created: Vec::new(),
            leaf: hierarchy.mount(),
        };
        for part in hierarchy.pod_container_path(pod_uid, container_id) {
            cgroup.leaf.push(part);
            match std::fs::create_dir(&cgroup.leaf) {
                Ok(()) => cgroup.created.push(cgroup.leaf.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("creating cgroup {}: {e}", cgroup.leaf.display()),
            }
        }
        cgroup
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.leaf.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.leaf.display()));
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let home = self.hierarchy.own_cgroup().join("cgroup.procs");
        if let Ok(procs) = std::fs::read_to_string(self.leaf.join("cgroup.procs")) {
            for pid in procs.lines() {
                let _ = std::fs::write(&home, pid);
            }
        }
        for dir in self.created.iter().rev() {
            // A process that just left may keep the cgroup busy briefly.
            for _ in 0..50 {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// A fresh pod UID and 64-hex-digit container ID.
pub fn new_ids() -> (String, String) {
    let uid = uuid::Uuid::new_v4().to_string();
    let id = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    (uid, id)
}
