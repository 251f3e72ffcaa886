//! A private OpenLDAP `slapd` for the `ldap` directory source's tests: the real server, not a
//! stand-in, started on loopback with free ports (`ldap://` with StartTLS, and `ldaps://`) in
//! a temporary directory, with a generated `slapd.conf` (mdb backend, suffix
//! `dc=example,dc=com`), the core/cosine/nis/inetorgperson schemas of the Debian package and a
//! small Active-Directory-shaped schema (`fixtures/ldap/ad.schema`: `sAMAccountName`, binary
//! `objectGUID`, `uSNChanged`, `msRTCSIP-PrimaryUserAddress`, an auxiliary class `user`…), TLS
//! with the test CA of `fixtures/ldap/` (`gen-certs.sh`). It is killed, and its directory
//! removed, on drop.
//!
//! The tree starts with the suffix, `ou=Service` holding the service account the source binds
//! as ([`SERVICE_DN`], [`SERVICE_PASSWORD`]; the root DN is exempt from size limits, a service
//! account is not) and `ou=Staff` ([`STAFF`]) for the people. Entries are added and changed
//! through the `ldap3` client as the root DN ([`Slapd::add_ldif`], [`Slapd::replace`],
//! [`Slapd::delete`]); [`ad_user`] and [`inet_person`] write the LDIF of generated people.
//!
//! OpenLDAP does not count `uSNChanged` up (AD's update sequence numbers belong to its domain
//! controllers): the tests set it in the LDIF and raise it on every change.
//!
//! Needs the Debian packages `slapd` and `ldap-utils` (`slapadd` loads the base tree).

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The suffix of the directory.
pub const SUFFIX: &str = "dc=example,dc=com";
/// The root DN (all rights, no limits).
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=com";
/// The root DN's password.
pub const ROOT_PASSWORD: &str = "admin-secret";
/// The service account the source binds as: reads everything, subject to the size limit.
pub const SERVICE_DN: &str = "cn=presence-hub,ou=Service,dc=example,dc=com";
/// The service account's password.
pub const SERVICE_PASSWORD: &str = "service-secret";
/// Where the people are.
pub const STAFF: &str = "ou=Staff,dc=example,dc=com";

const SLAPD: &str = "/usr/sbin/slapd";
const SLAPADD: &str = "/usr/sbin/slapadd";
const MISSING: &str = "slapd not found: install the Debian packages slapd and ldap-utils (apt-get install slapd ldap-utils)";

const AD_SCHEMA: &str = include_str!("../../fixtures/ldap/ad.schema");
const CA_PEM: &str = include_str!("../../fixtures/ldap/ca.pem");
const OTHER_CA_PEM: &str = include_str!("../../fixtures/ldap/other-ca.pem");
const SERVER_PEM: &str = include_str!("../../fixtures/ldap/server.pem");
const SERVER_KEY: &str = include_str!("../../fixtures/ldap/server.key");

/// How the server is set up.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `sizelimit` for everyone but the root DN: at most this many entries per search without
    /// paging (paged searches are not limited in total). `None`: slapd's default, 500.
    pub size_limit: Option<u32>,
    /// LDIF loaded with `slapadd` before the server starts (fast for many entries), after the
    /// base tree.
    pub ldif: Option<String>,
}

/// A running slapd; killed on drop.
pub struct Slapd {
    dir: PathBuf,
    child: Option<Child>,
    ldap_port: u16,
    ldaps_port: u16,
}

impl Slapd {
    /// Starts a slapd with the defaults (size limit 500, the base tree only).
    pub fn start() -> io::Result<Slapd> {
        Slapd::start_with(Options::default())
    }

    /// Starts a slapd set up as `options` says.
    pub fn start_with(options: Options) -> io::Result<Slapd> {
        if !Path::new(SLAPD).exists() || !Path::new(SLAPADD).exists() {
            return Err(io::Error::new(io::ErrorKind::NotFound, MISSING));
        }
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("presence-slapd-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("db"))?;
        for (name, text) in [("ad.schema", AD_SCHEMA), ("ca.pem", CA_PEM), ("other-ca.pem", OTHER_CA_PEM), ("server.pem", SERVER_PEM), ("server.key", SERVER_KEY)] {
            std::fs::write(dir.join(name), text)?;
        }
        std::fs::write(dir.join("slapd.conf"), config(&dir, options.size_limit.unwrap_or(500)))?;
        let mut ldif = base_ldif();
        if let Some(more) = &options.ldif {
            ldif.push('\n');
            ldif.push_str(more);
        }
        std::fs::write(dir.join("init.ldif"), ldif)?;
        let out = Command::new(SLAPADD).arg("-q").arg("-f").arg(dir.join("slapd.conf")).arg("-l").arg(dir.join("init.ldif")).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(io::Error::other(format!("slapadd failed: {}", String::from_utf8_lossy(&out.stderr))));
        }
        // A free port can be taken between probing and slapd's bind: try a few pairs.
        let mut last = None;
        for _ in 0..5 {
            let (ldap_port, ldaps_port) = (free_port()?, free_port()?);
            match spawn(&dir, ldap_port, ldaps_port) {
                Ok(child) => return Ok(Slapd { dir, child: Some(child), ldap_port, ldaps_port }),
                Err(e) => last = Some(e),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last.unwrap_or_else(|| io::Error::other("slapd did not start")))
    }

    /// `ldap://127.0.0.1:PORT` (plain, StartTLS offered).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:PORT` (TLS from the first byte).
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// The CA that signed the server's certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA that did not sign it (PEM file).
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    /// The server's working directory (config, database, `slapd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn admin(&self) -> io::Result<ldap3::Ldap> {
        let (conn, mut ldap) = ldap3::LdapConnAsync::new(&self.ldap_url()).await.map_err(io::Error::other)?;
        ldap3::drive!(conn);
        ldap.simple_bind(ROOT_DN, ROOT_PASSWORD).await.and_then(|r| r.success()).map_err(io::Error::other)?;
        Ok(ldap)
    }

    /// Adds the entries of `ldif` (records separated by blank lines; `attr: value` and
    /// `attr:: base64`; no line folding) as the root DN.
    pub async fn add_ldif(&self, ldif: &str) -> io::Result<()> {
        let mut ldap = self.admin().await?;
        for (dn, attrs) in parse_ldif(ldif)? {
            ldap.add(&dn, attrs).await.and_then(|r| r.success()).map_err(|e| io::Error::other(format!("add {dn}: {e}")))?;
        }
        let _ = ldap.unbind().await;
        Ok(())
    }

    /// Replaces the values of each `(attribute, values)` of `dn` (no values: removes it).
    pub async fn replace(&self, dn: &str, changes: &[(&str, &[&[u8]])]) -> io::Result<()> {
        let mut ldap = self.admin().await?;
        let mods = changes.iter().map(|(a, vs)| ldap3::Mod::Replace(a.as_bytes().to_vec(), vs.iter().map(|v| v.to_vec()).collect::<HashSet<_>>())).collect();
        ldap.modify(dn, mods).await.and_then(|r| r.success()).map_err(|e| io::Error::other(format!("modify {dn}: {e}")))?;
        let _ = ldap.unbind().await;
        Ok(())
    }

    /// Deletes `dn`.
    pub async fn delete(&self, dn: &str) -> io::Result<()> {
        let mut ldap = self.admin().await?;
        ldap.delete(dn).await.and_then(|r| r.success()).map_err(|e| io::Error::other(format!("delete {dn}: {e}")))?;
        let _ = ldap.unbind().await;
        Ok(())
    }

    /// What slapd wrote to its standard error (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Starts slapd in the foreground (`-d 0`) and waits until it accepts connections.
fn spawn(dir: &Path, ldap_port: u16, ldaps_port: u16) -> io::Result<Child> {
    let log = std::fs::File::create(dir.join("slapd.log"))?;
    let urls = format!("ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/");
    let mut child = Command::new(SLAPD).arg("-f").arg(dir.join("slapd.conf")).arg("-h").arg(urls).arg("-d").arg("0").stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default();
            return Err(io::Error::other(format!("slapd exited ({status}): {log}")));
        }
        let up = |p| TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, p)), Duration::from_millis(200)).is_ok();
        if up(ldap_port) && up(ldaps_port) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, "slapd did not accept connections within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config(dir: &Path, size_limit: u32) -> String {
    let d = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
include {d}/ad.schema
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCACertificateFile {d}/ca.pem
TLSCertificateFile {d}/server.pem
TLSCertificateKeyFile {d}/server.key
sizelimit size.soft={size_limit} size.hard={size_limit} size.prtotal=unlimited
database mdb
maxsize 268435456
dbnosync
suffix \"{SUFFIX}\"
rootdn \"{ROOT_DN}\"
rootpw {ROOT_PASSWORD}
directory {d}/db
index objectClass eq
index uSNChanged eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
"
    )
}

fn base_ldif() -> String {
    format!(
        "dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=Service,{SUFFIX}
objectClass: organizationalUnit
ou: Service

dn: {SERVICE_DN}
objectClass: person
cn: presence-hub
sn: presence-hub
userPassword: {SERVICE_PASSWORD}

dn: {STAFF}
objectClass: organizationalUnit
ou: Staff
"
    )
}

/// The `objectGUID` of generated person `i`: 16 bytes, distinct per `i`.
pub fn guid(i: u32) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&i.to_le_bytes());
    g[4..].copy_from_slice(&[0xa1, 0xb2, 0xc3, 0xd4, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80]);
    g
}

/// The DN of generated person `i` (`cn=user{i},ou=Staff,…`).
pub fn user_dn(i: u32) -> String {
    format!("cn=user{i},{STAFF}")
}

/// The LDIF of an Active-Directory-shaped person `i` (`sAMAccountName` `user{i}`, display name
/// `User {i}`, `user{i}@example.com`, mobile, phone, `ipPhone` `{1000 + i}`, title, department,
/// SIP address, Entra id, binary [`guid`]`(i)`) with `uSNChanged` `usn`. `disabled` sets
/// `userAccountControl` to 514 (AD's disabled account: bit 2), else 512.
pub fn ad_user(i: u32, usn: u64, disabled: bool) -> String {
    let guid = base64::engine::general_purpose::STANDARD.encode(guid(i));
    let uac = if disabled { 514 } else { 512 };
    format!(
        "dn: {dn}
objectClass: inetOrgPerson
objectClass: user
cn: user{i}
sn: User{i}
sAMAccountName: user{i}
displayName: User {i}
mail: user{i}@example.com
mobile: +47 900 {m:05}
telephoneNumber: +47 22 {m:05}
ipPhone: {ext}
title: Engineer
department: Support
msRTCSIP-PrimaryUserAddress: sip:user{i}@example.com
msDS-ExternalDirectoryObjectId: User_00000000-0000-0000-0000-{i:012}
objectGUID:: {guid}
uSNChanged: {usn}
userAccountControl: {uac}
",
        dn = user_dn(i),
        m = i % 100_000,
        ext = 1000 + i,
    )
}

/// The LDIF of a plain OpenLDAP `inetOrgPerson` `i` (`uid` `person{i}`, display name
/// `Person {i}`, mail), under `ou=Staff`.
pub fn inet_person(i: u32) -> String {
    format!(
        "dn: uid=person{i},{STAFF}
objectClass: inetOrgPerson
uid: person{i}
cn: Person {i}
sn: {i}
displayName: Person {i}
mail: person{i}@example.com
"
    )
}

/// An LDIF record: the DN and the attributes with their values, as `ldap3`'s add takes them.
type Record = (String, Vec<(Vec<u8>, HashSet<Vec<u8>>)>);

/// The records of `ldif`.
fn parse_ldif(ldif: &str) -> io::Result<Vec<Record>> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let mut out = Vec::new();
    for record in ldif.split("\n\n").map(str::trim).filter(|r| !r.is_empty()) {
        let mut dn = None;
        let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = Vec::new();
        for line in record.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(':').ok_or_else(|| bad(format!("not an LDIF line: {line}")))?;
            let value = match value.strip_prefix(':') {
                Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|e| bad(format!("{line}: {e}")))?,
                None => value.trim_start().as_bytes().to_vec(),
            };
            if name.eq_ignore_ascii_case("dn") {
                dn = Some(String::from_utf8(value).map_err(|e| bad(e.to_string()))?);
                continue;
            }
            match attrs.iter_mut().find(|(a, _)| a.eq_ignore_ascii_case(name.as_bytes())) {
                Some((_, vs)) => {
                    vs.insert(value);
                }
                None => attrs.push((name.as_bytes().to_vec(), HashSet::from([value]))),
            }
        }
        out.push((dn.ok_or_else(|| bad(format!("a record without dn: {record}")))?, attrs));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldif_records_with_base64_values() {
        let r = parse_ldif(&format!("{}\n\n# c\n{}", ad_user(7, 3, false), inet_person(2))).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, user_dn(7));
        let guid_values = &r[0].1.iter().find(|(a, _)| a == b"objectGUID").unwrap().1;
        assert!(guid_values.contains(&guid(7).to_vec()));
        let classes = &r[0].1.iter().find(|(a, _)| a == b"objectClass").unwrap().1;
        assert_eq!(classes.len(), 2);
        assert!(parse_ldif("cn: x").is_err());
    }
}
