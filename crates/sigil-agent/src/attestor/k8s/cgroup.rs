//! Which pod and container a process runs in, read from the text of its
//! `/proc/<pid>/cgroup` (and, as a fallback, `/proc/<pid>/mountinfo`).
//!
//! Sans-IO: every function here takes file contents and returns facts; the
//! attestor reads the files (see `super::K8sAttestor`). Nothing here ever
//! decides what a workload may be; it only names the container.
//!
//! Two locators, as in SPIRE:
//!
//! - The current one (SPIRE's default, `use_new_container_locator = true`)
//!   walks each cgroup path backwards. The first path segment (from the end)
//!   holding a 64-hex-digit word is the container ID; the pod UID is the
//!   first `pod<uuid>` word at or before it, with systemd's `_` turned back
//!   into `-`. This covers the kubelet's cgroupfs layout
//!   (`/kubepods/besteffort/pod<uid>/<id>`), its systemd layout
//!   (`kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope`,
//!   `crio-<id>.scope`, `docker-<id>.scope`), cgroup v1 and v2 alike, and
//!   kind's nesting under `/docker/<id>/`. A line with a pod UID wins over
//!   lines without one; two different pod UIDs, or two different container
//!   IDs while no pod UID is known, are an error rather than a guess. Only
//!   when the cgroup file names no container is `mountinfo` consulted (its
//!   cgroup mounts' roots, same rules): the kernel writes the cgroup file,
//!   whereas a workload shapes its own mount namespace.
//! - The legacy one (`use_new_container_locator = false`) matches each
//!   cgroup path (less a `.scope` suffix) against SPIRE's two patterns: a
//!   punctuation-delimited `pod<uid>` followed by the 64-hex container ID at
//!   the end, or a `crio-<id>` with no pod UID before it (CRI-O under
//!   KubeEdge).
//!
//! A process in no container yields `None`, which the attestor turns into
//! "no selectors", not an error.

use std::sync::LazyLock;

use regex::Regex;

/// The pod and container a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The pod UID in its Kubernetes form (dashes), when the cgroup path
    /// names it (CRI-O under KubeEdge does not).
    pub pod_uid: Option<String>,
    /// The container ID as the runtime names it (64 hex digits).
    pub container_id: String,
}

/// Why the cgroup or mount information could not be read as a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// A `/proc/<pid>/cgroup` line is not `hierarchy-ID:controllers:path`.
    #[error("invalid cgroup entry {line:?}: expected hierarchy-ID:controller-list:cgroup-path")]
    MalformedCgroupLine {
        /// The offending line.
        line: String,
    },
    /// A `/proc/<pid>/mountinfo` line does not have the proc(5) shape.
    #[error("invalid mountinfo line {line:?}: {reason}")]
    MalformedMountInfoLine {
        /// The offending line.
        line: String,
        /// What is missing.
        reason: &'static str,
    },
    /// The process's cgroups name two different pods.
    #[error("multiple pod UIDs found ({first:?}, {second:?})")]
    MultiplePodUids {
        /// The first pod UID seen.
        first: String,
        /// The conflicting one.
        second: String,
    },
    /// The process's cgroups name two different containers.
    #[error("multiple container IDs found ({first:?}, {second:?})")]
    MultipleContainerIds {
        /// The first container ID seen.
        first: String,
        /// The conflicting one (empty when a line named none).
        second: String,
    },
}

/// The cgroup paths of a `/proc/<pid>/cgroup` file, one per line
/// (`hierarchy-ID:controller-list:cgroup-path`; the path may contain colons).
pub fn cgroup_paths(cgroup_file: &str) -> Result<Vec<&str>, LocateError> {
    cgroup_file
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(_), Some(_), Some(path)) => Ok(path),
                _ => Err(LocateError::MalformedCgroupLine {
                    line: line.to_owned(),
                }),
            }
        })
        .collect()
}

/// One mount of a `/proc/<pid>/mountinfo` file: its root within the mounted
/// filesystem and the filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    /// Field 4: the directory of the filesystem that forms the mount's root.
    pub root: &'a str,
    /// The first field after the `-` separator.
    pub fs_type: &'a str,
}

/// Parses `/proc/<pid>/mountinfo`. Fields are split on single spaces, so an
/// empty mount source (a tmpfs) stays an empty field instead of shifting the
/// others; blank lines are skipped.
pub fn mounts(mountinfo: &str) -> Result<Vec<Mount<'_>>, LocateError> {
    let malformed = |line: &str, reason| LocateError::MalformedMountInfoLine {
        line: line.to_owned(),
        reason,
    };
    mountinfo
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields
                .iter()
                .position(|f| *f == "-")
                .ok_or_else(|| malformed(line, "no \"-\" separator"))?;
            if sep < 6 {
                return Err(malformed(line, "fewer than 6 fields before the separator"));
            }
            match fields.get(sep + 1) {
                Some(fs_type) if !fs_type.is_empty() => Ok(Mount {
                    root: fields[3],
                    fs_type,
                }),
                _ => Err(malformed(line, "no filesystem type")),
            }
        })
        .collect()
}

/// The current locator over the cgroup file: `Ok(None)` when no line names
/// a container.
pub fn locate_in_cgroups(cgroup_file: &str) -> Result<Option<ContainerRef>, LocateError> {
    let mut found = Found::default();
    for path in cgroup_paths(cgroup_file)? {
        found.add(path)?;
    }
    Ok(found.finish())
}

/// The current locator over the cgroup mounts of a mountinfo file (roots
/// other than `/`), the fallback when the cgroup file names no container.
pub fn locate_in_mountinfo(mountinfo: &str) -> Result<Option<ContainerRef>, LocateError> {
    let mut found = Found::default();
    for mount in mounts(mountinfo)? {
        if matches!(mount.fs_type, "cgroup" | "cgroup2") && mount.root != "/" {
            found.add(mount.root)?;
        }
    }
    Ok(found.finish())
}

/// The legacy locator (`use_new_container_locator = false`) over the cgroup
/// file.
pub fn locate_legacy(cgroup_file: &str) -> Result<Option<ContainerRef>, LocateError> {
    let mut found: Option<ContainerRef> = None;
    for path in cgroup_paths(cgroup_file)? {
        let Some(candidate) = legacy_match(path) else {
            continue;
        };
        match &found {
            None => found = Some(candidate),
            Some(f) if f.container_id != candidate.container_id => {
                return Err(LocateError::MultipleContainerIds {
                    first: f.container_id.clone(),
                    second: candidate.container_id,
                });
            }
            Some(f) if f.pod_uid != candidate.pod_uid => {
                return Err(LocateError::MultiplePodUids {
                    first: f.pod_uid.clone().unwrap_or_default(),
                    second: candidate.pod_uid.unwrap_or_default(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

/// What the current locator has gathered so far over several paths.
#[derive(Default)]
struct Found {
    pod_uid: Option<String>,
    container_id: Option<String>,
}

impl Found {
    fn add(&mut self, path: &str) -> Result<(), LocateError> {
        let (pod_uid, container_id) = match extract(path) {
            Some(r) => (r.pod_uid, Some(r.container_id)),
            None => (None, None),
        };
        // A line naming a pod outranks lines that do not (kind on a host
        // whose unified hierarchy shows the node container's own ID).
        match (&self.pod_uid, &pod_uid) {
            (Some(_), None) => return Ok(()),
            (None, Some(_)) => {
                self.pod_uid.clone_from(&pod_uid);
                self.container_id.clone_from(&container_id);
            }
            _ => {}
        }
        if let (Some(first), Some(second)) = (&self.pod_uid, &pod_uid)
            && first != second
        {
            return Err(LocateError::MultiplePodUids {
                first: first.clone(),
                second: second.clone(),
            });
        }
        if let Some(first) = &self.container_id
            && Some(first) != container_id.as_ref()
        {
            return Err(LocateError::MultipleContainerIds {
                first: first.clone(),
                second: container_id.unwrap_or_default(),
            });
        }
        self.pod_uid = pod_uid;
        self.container_id = container_id;
        Ok(())
    }

    fn finish(self) -> Option<ContainerRef> {
        self.container_id.map(|container_id| ContainerRef {
            pod_uid: self.pod_uid,
            container_id,
        })
    }
}

/// The current locator on one path: walk segments from the end to the first
/// holding a container ID, then from what precedes the ID to the first
/// holding a pod UID. An empty segment (the leading `/`, or `//`) ends the
/// walk.
fn extract(path: &str) -> Option<ContainerRef> {
    let mut segments = path.rsplit('/');
    let mut before_id = None;
    let mut container_id = None;
    for segment in segments.by_ref() {
        if segment.is_empty() {
            return None;
        }
        if let Some(start) = find_container_id(segment) {
            container_id = Some(segment[start..start + CONTAINER_ID_LEN].to_owned());
            before_id = Some(&segment[..start]);
            break;
        }
    }
    let container_id = container_id?;
    let mut pod_uid = None;
    let rest = before_id.into_iter().filter(|s| !s.is_empty());
    for segment in rest.chain(segments) {
        if segment.is_empty() {
            break;
        }
        if let Some(uid) = find_pod_uid(segment) {
            pod_uid = Some(uid.replace('_', "-"));
            break;
        }
    }
    Some(ContainerRef {
        pod_uid,
        container_id,
    })
}

const CONTAINER_ID_LEN: usize = 64;
/// `8-4-4-4-12` hex digits with one separator between groups.
const POD_UID_LEN: usize = 36;

/// ASCII word characters, as in a regular expression's `\b`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Word boundaries on both sides of `s[start..end]`.
fn is_whole_word(s: &[u8], start: usize, end: usize) -> bool {
    (start == 0 || !is_word(s[start - 1])) && (end == s.len() || !is_word(s[end]))
}

/// Start of the leftmost word of exactly 64 hex digits.
fn find_container_id(segment: &str) -> Option<usize> {
    let s = segment.as_bytes();
    (0..=s.len().checked_sub(CONTAINER_ID_LEN)?).find(|&i| {
        s[i..i + CONTAINER_ID_LEN].iter().all(u8::is_ascii_hexdigit)
            && is_whole_word(s, i, i + CONTAINER_ID_LEN)
    })
}

/// The UID of the leftmost whole word `pod<8>-<4>-<4>-<4>-<12>` (separators
/// `-` or `_`), as written in the path.
fn find_pod_uid(segment: &str) -> Option<&str> {
    let s = segment.as_bytes();
    let total = 3 + POD_UID_LEN;
    (0..=s.len().checked_sub(total)?)
        .find(|&i| {
            s[i..].starts_with(b"pod")
                && is_uuid_shape(&s[i + 3..i + total])
                && is_whole_word(s, i, i + total)
        })
        .map(|i| &segment[i + 3..i + total])
}

fn is_uuid_shape(s: &[u8]) -> bool {
    s.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-' || *b == b'_',
        _ => b.is_ascii_hexdigit(),
    })
}

/// SPIRE's legacy patterns. `[[:punct:]]` is ASCII punctuation, as in Go.
static LEGACY_POD_AND_CONTAINER: LazyLock<Regex> = LazyLock::new(|| {
    let hex = "[[:xdigit:]]";
    let p = "[[:punct:]]";
    let pattern = format!(
        "{p}pod(?P<poduid>{hex}{{8}}{p}?{hex}{{4}}{p}?{hex}{{4}}{p}?{hex}{{4}}{p}?{hex}{{12}}){p}\
         (?:[[:^punct:]]+{p})*\
         (?P<containerid>{hex}{{64}})$"
    );
    #[allow(clippy::expect_used)]
    Regex::new(&pattern).expect("the legacy pod pattern is a valid regular expression")
});

static LEGACY_CRIO_WITHOUT_POD: LazyLock<Regex> = LazyLock::new(|| {
    let hex = "[[:xdigit:]]";
    let p = "[[:punct:]]";
    let pattern = format!(
        "(?P<mustnotmatch>pod{hex}{{8}}{p}?{hex}{{4}}{p}?{hex}{{4}}{p}?{hex}{{4}}{p}?{hex}{{12}}{p})?\
         (?:[[:^punct:]]*/*)*crio{p}\
         (?P<containerid>{hex}{{64}})$"
    );
    #[allow(clippy::expect_used)]
    Regex::new(&pattern).expect("the legacy CRI-O pattern is a valid regular expression")
});

/// The legacy locator on one path: exactly one of the two patterns must
/// match (both matching is treated as no match, as SPIRE does).
fn legacy_match(path: &str) -> Option<ContainerRef> {
    let path = path.strip_suffix(".scope").unwrap_or(path);
    let with_pod = LEGACY_POD_AND_CONTAINER
        .captures(path)
        .map(|c| ContainerRef {
            pod_uid: c.name("poduid").map(|m| canonical_pod_uid(m.as_str())),
            container_id: c["containerid"].to_owned(),
        });
    let crio = LEGACY_CRIO_WITHOUT_POD
        .captures(path)
        .filter(|c| c.name("mustnotmatch").is_none_or(|m| m.as_str().is_empty()))
        .map(|c| ContainerRef {
            pod_uid: None,
            container_id: c["containerid"].to_owned(),
        });
    match (with_pod, crio) {
        (Some(found), None) | (None, Some(found)) => Some(found),
        (Some(_), Some(_)) => {
            tracing::warn!(
                cgroup = path,
                "more than one legacy pattern matches the cgroup path"
            );
            None
        }
        (None, None) => None,
    }
}

/// Punctuation in a pod UID as written in a cgroup path becomes `-`, its
/// Kubernetes spelling.
fn canonical_pod_uid(uid: &str) -> String {
    uid.chars()
        .map(|c| if c.is_ascii_punctuation() { '-' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";
    const UID_SYSTEMD: &str = "2c48913c_b29f_11e7_9350_020968147796";

    fn in_pod(uid: &str, id: &str) -> Option<ContainerRef> {
        Some(ContainerRef {
            pod_uid: Some(uid.to_owned()),
            container_id: id.to_owned(),
        })
    }

    fn v1_file(path: &str) -> String {
        [
            "12:pids:",
            "11:memory:",
            "4:cpu,cpuacct:",
            "1:name=systemd:",
        ]
        .iter()
        .map(|prefix| format!("{prefix}{path}\n"))
        .collect()
    }

    /// Both locators agree on every layout they both know.
    fn both(file: &str) -> Option<ContainerRef> {
        let new = locate_in_cgroups(file).expect("current locator");
        let legacy = locate_legacy(file).expect("legacy locator");
        assert_eq!(new, legacy, "locators disagree on {file}");
        new
    }

    #[test]
    fn cgroup_v1_cgroupfs_layout_names_pod_and_container() {
        let file = v1_file(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(both(&file), in_pod(UID, ID));
        let file = v1_file(&format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!(both(&file), in_pod(UID, ID), "guaranteed QoS has no class");
    }

    #[test]
    fn cgroup_v1_systemd_layout_with_containerd_crio_and_docker_scopes() {
        for runtime in ["cri-containerd", "crio", "docker"] {
            let file = v1_file(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/{runtime}-{ID}.scope"
            ));
            assert_eq!(both(&file), in_pod(UID, ID), "{runtime}");
        }
    }

    #[test]
    fn cgroup_v2_systemd_layout_names_pod_and_container() {
        for runtime in ["cri-containerd", "crio", "docker"] {
            let file = format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_SYSTEMD}.slice/{runtime}-{ID}.scope\n"
            );
            assert_eq!(both(&file), in_pod(UID, ID), "{runtime}");
        }
    }

    #[test]
    fn cgroup_v2_cgroupfs_layout_names_pod_and_container() {
        let file = format!("0::/kubepods/besteffort/pod{UID}/{ID}\n");
        assert_eq!(both(&file), in_pod(UID, ID));
    }

    #[test]
    fn colon_separated_systemd_names_are_understood_by_the_current_locator() {
        let file = format!("0::/kubepods-besteffort-pod{UID_SYSTEMD}.slice:cri-containerd:{ID}\n");
        assert_eq!(locate_in_cgroups(&file).expect("parse"), in_pod(UID, ID));
    }

    #[test]
    fn a_namespaced_cgroup_v2_path_gives_the_container_without_a_pod() {
        // Inside a cgroup namespace the pod directory is `..`.
        let file = format!("0::/../crio-{ID}.scope\n");
        let want = Some(ContainerRef {
            pod_uid: None,
            container_id: ID.to_owned(),
        });
        assert_eq!(both(&file), want);
        let file = format!("0::/../{ID}\n");
        assert_eq!(locate_in_cgroups(&file).expect("parse"), want);
    }

    #[test]
    fn kind_nesting_prefers_the_line_that_names_a_pod() {
        let node = "93529524695bb00d91c1f6dba692ea8d3550c3b94fb2463af7bc9ec82f992d26";
        let file = format!(
            "13:name=systemd:/docker/{node}/kubepods/besteffort/pod{UID}/{ID}\n\
             12:pids:/docker/{node}/kubepods/besteffort/pod{UID}/{ID}\n\
             0::/docker/{node}/system.slice/containerd.service\n"
        );
        assert_eq!(locate_in_cgroups(&file).expect("parse"), in_pod(UID, ID));
    }

    #[test]
    fn lines_outside_any_container_are_ignored_beside_a_pod_line() {
        let file = format!(
            "3:rdma:/\n10:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_SYSTEMD}.slice/crio-{ID}.scope\n0::/system.slice/crio.service\n"
        );
        assert_eq!(locate_in_cgroups(&file).expect("parse"), in_pod(UID, ID));
    }

    #[test]
    fn processes_outside_pods_are_not_in_a_container() {
        for file in [
            "0::/\n",
            "0::/user.slice/user-1000.slice/session-3.scope\n",
            "12:pids:/\n4:memory:/process_api/ba8ff0830059ad1ccb95b7f544de6d7e\n0::/\n",
            "0::/system.slice/containerd.service\n",
            // Hex runs of the wrong length, or glued to other word characters.
            &format!("0::/kubepods/pod{UID}/{}\n", &ID[..63]),
            &format!("0::/kubepods/pod{UID}/x{ID}\n"),
            "",
        ] {
            assert_eq!(both(file), None, "{file:?}");
        }
    }

    #[test]
    fn two_pods_or_two_containers_are_an_error_not_a_guess() {
        let other_uid = "00000000-1111-2222-3333-444444444444";
        let other_id = ID.replace('9', "8");
        let file = format!("1:pids:/kubepods/pod{UID}/{ID}\n0::/kubepods/pod{other_uid}/{ID}\n");
        assert!(matches!(
            locate_in_cgroups(&file),
            Err(LocateError::MultiplePodUids { .. })
        ));
        let file = format!("1:pids:/kubepods/pod{UID}/{ID}\n0::/kubepods/pod{UID}/{other_id}\n");
        assert!(matches!(
            locate_in_cgroups(&file),
            Err(LocateError::MultipleContainerIds { .. })
        ));
        assert!(matches!(
            locate_legacy(&file),
            Err(LocateError::MultipleContainerIds { .. })
        ));
        // Without a pod UID, a container line beside one naming nothing is
        // ambiguous too (SPIRE refuses it the same way).
        let file = format!("1:pids:/docker/{ID}\n0::/\n");
        assert!(matches!(
            locate_in_cgroups(&file),
            Err(LocateError::MultipleContainerIds { second, .. }) if second.is_empty()
        ));
    }

    #[test]
    fn malformed_cgroup_lines_are_rejected() {
        let err = locate_in_cgroups("0::/\nbogus\n").expect_err("malformed");
        assert_eq!(
            err,
            LocateError::MalformedCgroupLine {
                line: "bogus".into()
            }
        );
    }

    #[test]
    fn legacy_crio_pattern_refuses_a_path_that_has_a_pod_uid_before_crio() {
        // Only the pod pattern may claim such a path.
        let path = format!("0::/kubepods/besteffort/pod{UID}/crio-{ID}\n");
        assert_eq!(locate_legacy(&path).expect("parse"), in_pod(UID, ID));
    }

    #[test]
    fn mountinfo_cgroup_roots_are_the_fallback() {
        let root = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_SYSTEMD}.slice/cri-containerd-{ID}.scope"
        );
        let text = format!(
            "2032 2031 0:309 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755\n\
             119 206 0:68 / /local rw,relatime - tmpfs  rw,size=8192k\n\
             2030 2031 0:30 / /sys/fs/cgroup/unified ro - cgroup2 cgroup2 rw\n\
             2033 2032 0:33 {root} /sys/fs/cgroup/systemd ro,nosuid shared:5 - cgroup systemd rw,name=systemd\n\
             2034 2032 0:34 {root} /sys/fs/cgroup/pids ro - cgroup cgroup rw,pids\n"
        );
        assert_eq!(locate_in_mountinfo(&text).expect("parse"), in_pod(UID, ID));
        assert_eq!(
            locate_in_mountinfo("1 2 0:1 / / rw - ext4 /dev/sda rw\n").expect("parse"),
            None
        );
        assert!(matches!(
            locate_in_mountinfo("1 2 0:1 / / rw ext4 /dev/sda rw\n"),
            Err(LocateError::MalformedMountInfoLine { .. })
        ));
    }
}
