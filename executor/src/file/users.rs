//! User and group names of a stage, resolved from its own `/etc/passwd` and
//! `/etc/group` (read inside the root, symlinks followed as the container would).
//!
//! Two sets of rules, because kiln must match two programs:
//!
//! - [`resolve_user`] is for `USER` and the identity of `RUN`, resolved as runc's
//!   `GetExecUser` does: a numeric uid is always a uid, whether or not passwd lists it
//!   (unlisted, it gets gid 0); a listed user gets its primary group from passwd and,
//!   when no group is given, the groups that name it in `/etc/group` as supplementary
//!   groups. An empty spec is uid 0.
//! - [`resolve_owner`] is for `--chown`, resolved as BuildKit's copy does: a bare uid
//!   is also the gid (`--chown=1000` is `1000:1000`), a bare name takes its primary
//!   group from passwd, and numeric ids need no files at all.
//!
//! Names that are not found are errors naming the file. Missing files are empty; lines
//! whose ids are not numbers are skipped rather than read as root.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::Owner;
use crate::User;
use crate::rootpath::{self, is_missing};

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";
/// Largest id runc accepts.
const MAX_ID: u32 = i32::MAX as u32;

/// Why a user or group spec cannot be resolved.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The spec is not `user`, `user:group` (each a name or a number).
    #[error("invalid user spec {spec:?}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
    },
    /// A numeric id above 2147483647.
    #[error("id {id} in user spec {spec:?} is out of range")]
    IdOutOfRange {
        /// The spec as given.
        spec: String,
        /// The id as written.
        id: String,
    },
    /// A user name that passwd does not list.
    #[error("unable to find user {name:?}: no matching entry in {file}")]
    UnknownUser {
        /// The name.
        name: String,
        /// The file searched, as the container sees it.
        file: &'static str,
    },
    /// A group name that the group file does not list.
    #[error("unable to find group {name:?}: no matching entry in {file}")]
    UnknownGroup {
        /// The name.
        name: String,
        /// The file searched, as the container sees it.
        file: &'static str,
    },
    /// A user database exists but cannot be read.
    #[error("cannot read {file} ({path:?})")]
    Read {
        /// The file, as the container sees it.
        file: &'static str,
        /// Its host path.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The path of a user database cannot be resolved inside the root.
    #[error("cannot resolve {file} inside the root filesystem")]
    Resolve {
        /// The file, as the container sees it.
        file: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

/// The identity `USER spec` gives to `RUN` in the stage mounted at `root`.
pub fn resolve_user(root: &Path, spec: &str) -> Result<User, UserError> {
    let (user, group) = split(spec)?;
    let user = if user.is_empty() { "0" } else { user };
    let users = read_passwd(root)?;
    let found = match id(spec, user)? {
        Some(uid) => users.iter().find(|u| u.uid == uid),
        None => users.iter().find(|u| u.name == user),
    };
    let (uid, mut gid, name) = match (found, id(spec, user)?) {
        (Some(u), _) => (u.uid, u.gid, Some(u.name.as_str())),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) => {
            return Err(UserError::UnknownUser {
                name: user.to_owned(),
                file: PASSWD,
            });
        }
    };
    let mut additional_gids = Vec::new();
    match group {
        Some(group) => gid = group_id(root, spec, group)?,
        None => {
            if let Some(name) = name {
                additional_gids = read_group(root)?
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                    .map(|g| g.gid)
                    .collect();
            }
        }
    }
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}

/// The owner `--chown=spec` gives to copied files in the stage mounted at `root`.
pub fn resolve_owner(root: &Path, spec: &str) -> Result<Owner, UserError> {
    let (user, group) = split(spec)?;
    if user.is_empty() {
        return Err(UserError::InvalidSpec {
            spec: spec.to_owned(),
        });
    }
    let (uid, primary) =
        match id(spec, user)? {
            Some(uid) => (uid, uid),
            None => {
                let users = read_passwd(root)?;
                let u = users.iter().find(|u| u.name == user).ok_or_else(|| {
                    UserError::UnknownUser {
                        name: user.to_owned(),
                        file: PASSWD,
                    }
                })?;
                (u.uid, u.gid)
            }
        };
    let gid = match group {
        Some(group) => group_id(root, spec, group)?,
        None => primary,
    };
    Ok(Owner { uid, gid })
}

/// `user[:group]`; the group, when present, is not empty.
fn split(spec: &str) -> Result<(&str, Option<&str>), UserError> {
    let invalid = || UserError::InvalidSpec {
        spec: spec.to_owned(),
    };
    match spec.split_once(':') {
        None => Ok((spec, None)),
        Some((_, group)) if group.is_empty() || group.contains(':') => Err(invalid()),
        Some((user, group)) => Ok((user, Some(group))),
    }
}

/// The id written in `part`, if it is a number.
fn id(spec: &str, part: &str) -> Result<Option<u32>, UserError> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    match part.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(UserError::IdOutOfRange {
            spec: spec.to_owned(),
            id: part.to_owned(),
        }),
    }
}

fn group_id(root: &Path, spec: &str, group: &str) -> Result<u32, UserError> {
    if let Some(gid) = id(spec, group)? {
        return Ok(gid);
    }
    read_group(root)?
        .iter()
        .find(|g| g.name == group)
        .map(|g| g.gid)
        .ok_or_else(|| UserError::UnknownGroup {
            name: group.to_owned(),
            file: GROUP,
        })
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_passwd(root: &Path) -> Result<Vec<PasswdEntry>, UserError> {
    Ok(read(root, PASSWD)?
        .lines()
        .filter_map(|line| {
            // name:password:uid:gid:gecos:home:shell
            let mut fields = line.trim().split(':');
            let name = fields.next().filter(|n| !n.is_empty())?;
            let uid = fields.nth(1)?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            Some(PasswdEntry {
                name: name.to_owned(),
                uid,
                gid,
            })
        })
        .collect())
}

fn read_group(root: &Path) -> Result<Vec<GroupEntry>, UserError> {
    Ok(read(root, GROUP)?
        .lines()
        .filter_map(|line| {
            // name:password:gid:member,member
            let mut fields = line.trim().split(':');
            let name = fields.next().filter(|n| !n.is_empty())?;
            let gid = fields.nth(1)?.parse().ok()?;
            let members = fields
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect();
            Some(GroupEntry {
                name: name.to_owned(),
                gid,
                members,
            })
        })
        .collect())
}

/// The contents of `file` in the root; empty when it does not exist.
fn read(root: &Path, file: &'static str) -> Result<String, UserError> {
    let rel = rootpath::resolve(root, Path::new(file))
        .map_err(|source| UserError::Resolve { file, source })?;
    let path = root.join(rel);
    match fs::read(&path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(err) if is_missing(&err) => Ok(String::new()),
        Err(source) => Err(UserError::Read { file, path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const PASSWD_FILE: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
broken:x:notanumber:5:::
# comment line
svc:x:2000:2000::/:/bin/false
";
    const GROUP_FILE: &str = "\
root:x:0:
daemon:x:1:
appgroup:x:1001:
audio:x:29:app,svc
video:x:44:app
wheel:x:10:root,app
svc:x:2000:
";

    fn root_with(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(text) = passwd {
            fs::write(dir.path().join("etc/passwd"), text).unwrap();
        }
        if let Some(text) = group {
            fs::write(dir.path().join("etc/group"), text).unwrap();
        }
        dir
    }

    fn user(uid: u32, gid: u32, additional_gids: &[u32]) -> User {
        User {
            uid,
            gid,
            additional_gids: additional_gids.to_vec(),
        }
    }

    #[test]
    fn users_resolve_as_runc_does() {
        let dir = root_with(Some(PASSWD_FILE), Some(GROUP_FILE));
        let table: &[(&str, User)] = &[
            ("", user(0, 0, &[10])),
            ("root", user(0, 0, &[10])),
            ("0", user(0, 0, &[10])),
            ("app", user(1000, 1001, &[29, 44, 10])),
            ("1000", user(1000, 1001, &[29, 44, 10])),
            ("app:audio", user(1000, 29, &[])),
            ("app:4242", user(1000, 4242, &[])),
            ("1000:44", user(1000, 44, &[])),
            ("4242", user(4242, 0, &[])),
            ("4242:video", user(4242, 44, &[])),
            ("svc", user(2000, 2000, &[29])),
            (":wheel", user(0, 10, &[])),
        ];
        for (spec, want) in table {
            assert_eq!(&resolve_user(dir.path(), spec).unwrap(), want, "{spec:?}");
        }
    }

    #[test]
    fn owners_resolve_as_buildkit_chown_does() {
        let dir = root_with(Some(PASSWD_FILE), Some(GROUP_FILE));
        let table: &[(&str, (u32, u32))] = &[
            ("app", (1000, 1001)),
            ("1000", (1000, 1000)),
            ("4242", (4242, 4242)),
            ("app:audio", (1000, 29)),
            ("app:77", (1000, 77)),
            ("1000:wheel", (1000, 10)),
            ("5:6", (5, 6)),
        ];
        for (spec, (uid, gid)) in table {
            assert_eq!(
                resolve_owner(dir.path(), spec).unwrap(),
                Owner {
                    uid: *uid,
                    gid: *gid
                },
                "{spec:?}"
            );
        }
    }

    #[test]
    fn unknown_names_and_bad_specs_are_errors() {
        let dir = root_with(Some(PASSWD_FILE), Some(GROUP_FILE));
        let r = dir.path();
        let err = resolve_user(r, "nobody").unwrap_err();
        assert!(
            matches!(err, UserError::UnknownUser { ref name, file: PASSWD } if name == "nobody")
        );
        assert_eq!(
            err.to_string(),
            "unable to find user \"nobody\": no matching entry in /etc/passwd"
        );
        assert!(matches!(
            resolve_user(r, "app:nogroup").unwrap_err(),
            UserError::UnknownGroup { ref name, file: GROUP } if name == "nogroup"
        ));
        assert!(matches!(
            resolve_owner(r, "broken").unwrap_err(),
            UserError::UnknownUser { .. }
        ));
        for spec in ["app:", "a:b:c", ":wheel"] {
            assert!(
                matches!(resolve_owner(r, spec), Err(UserError::InvalidSpec { .. })),
                "{spec:?}"
            );
        }
        assert!(matches!(
            resolve_user(r, "4294967295").unwrap_err(),
            UserError::IdOutOfRange { .. }
        ));
        assert!(matches!(
            resolve_owner(r, "1:99999999999").unwrap_err(),
            UserError::IdOutOfRange { .. }
        ));
    }

    #[test]
    fn missing_files_allow_numbers_only() {
        let dir = root_with(None, None);
        let r = dir.path();
        assert_eq!(resolve_user(r, "1234").unwrap(), user(1234, 0, &[]));
        assert_eq!(resolve_user(r, "1234:99").unwrap(), user(1234, 99, &[]));
        assert_eq!(
            resolve_owner(r, "1234").unwrap(),
            Owner {
                uid: 1234,
                gid: 1234
            }
        );
        assert!(matches!(
            resolve_user(r, "app").unwrap_err(),
            UserError::UnknownUser { .. }
        ));
        assert!(matches!(
            resolve_user(r, "0:staff").unwrap_err(),
            UserError::UnknownGroup { .. }
        ));
    }

    #[test]
    fn files_are_read_inside_the_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(outer.path().join("etc")).unwrap();
        fs::write(outer.path().join("etc/passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        fs::write(root.join("real-passwd"), "app:x:7:8::/:/bin/sh\n").unwrap();
        symlink("../../real-passwd", root.join("etc/passwd")).unwrap();
        assert_eq!(
            resolve_owner(&root, "app").unwrap(),
            Owner { uid: 7, gid: 8 }
        );
        assert!(resolve_owner(&root, "evil").is_err());

        fs::remove_file(root.join("etc/passwd")).unwrap();
        fs::create_dir(root.join("etc/passwd")).unwrap();
        assert!(matches!(
            resolve_user(&root, "app").unwrap_err(),
            UserError::Read { file: PASSWD, .. }
        ));
    }
}
