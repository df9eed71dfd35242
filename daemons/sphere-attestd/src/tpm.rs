//! A small TPM 2.0 client that speaks the TPM's command language directly.
//!
//! Why not `tss-esapi`: it links the C tpm2-tss stack (and OpenSSL), and the device image has no
//! shared libraries; Debian ships those only as shared armhf libraries, so we would have to
//! cross-build and statically link two C code bases for a handful of commands. The commands the
//! daemon needs are few and their encodings are fixed by the TPM 2.0 Library specification
//! (Part 3, "Commands"), so we marshal them here: GetRandom, CreatePrimary, FlushContext, Sign,
//! Quote, PCR_Extend and PCR_Read, all with the plain password session (empty auth), which is
//! what an un-owned device TPM accepts.
//!
//! Transport: the kernel's resource manager `/dev/tpmrm0` (each open file gets its own
//! transient-object space, flushed when it closes), `/dev/tpm0`, or for host tests a swtpm
//! Unix socket (`unix:PATH`), which carries the same raw command/response bytes.
//!
//! Every response is parsed with bounds checks: a TPM is hardware we trust for its keys, but a
//! malformed or truncated response must be an error, never a panic.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

const ST_NO_SESSIONS: u16 = 0x8001;
const ST_SESSIONS: u16 = 0x8002;
const ST_HASHCHECK: u16 = 0x8024;
const ST_ATTEST_QUOTE: u16 = 0x8018;
/// `TPM_GENERATED_VALUE`: every structure the TPM signs with a restricted-style attestation
/// starts with it, so a verifier can tell a quote from a signed digest.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;

const CC_CREATE_PRIMARY: u32 = 0x131;
const CC_SIGN: u32 = 0x15D;
const CC_QUOTE: u32 = 0x158;
const CC_PCR_EXTEND: u32 = 0x182;
const CC_PCR_READ: u32 = 0x17E;
const CC_GET_RANDOM: u32 = 0x17B;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const CC_STARTUP: u32 = 0x144;

const RH_OWNER: u32 = 0x4000_0001;
const RH_NULL: u32 = 0x4000_0007;
const RS_PW: u32 = 0x4000_0009;

const ALG_ECC: u16 = 0x0023;
const ALG_SHA256: u16 = 0x000B;
const ALG_NULL: u16 = 0x0010;
const ALG_ECDSA: u16 = 0x0018;
const ECC_NIST_P256: u16 = 0x0003;

/// TPM_RC_INITIALIZE: the TPM has not seen TPM2_Startup yet (only a bare simulator; the kernel
/// starts a real one).
const RC_INITIALIZE: u32 = 0x100;

/// The identity key's `unique` seed. CreatePrimary is deterministic: the same owner seed and the
/// same template give the same key on every boot, so the private key never needs to exist
/// outside the TPM, not even wrapped. A TPM2_Clear (new owner seed) gives a new identity, which
/// is what clearing a TPM should mean.
const IDENTITY_UNIQUE: &[u8] = b"opensphere.device-identity.v1";

/// Largest response we accept (TPM2 responses are bounded by MAX_RESPONSE_SIZE, 4 KiB on most).
const MAX_RESPONSE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("TPM device {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("TPM command {command:#x} failed with response code {code:#x} ({meaning})")]
    Response { command: u32, code: u32, meaning: &'static str },
    #[error("malformed TPM response to command {command:#x}: {what}")]
    Malformed { command: u32, what: &'static str },
    #[error("invalid argument: {0}")]
    Argument(&'static str),
}

/// Where the TPM is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TpmPath {
    /// A character device: /dev/tpmrm0 (preferred) or /dev/tpm0.
    Device(PathBuf),
    /// A swtpm server socket (`swtpm socket --server type=unixio,path=PATH`), for host tests.
    Unix(PathBuf),
}

impl TpmPath {
    /// `unix:PATH` or a device path.
    pub fn parse(text: &str) -> TpmPath {
        match text.strip_prefix("unix:") {
            Some(path) => TpmPath::Unix(PathBuf::from(path)),
            None => TpmPath::Device(PathBuf::from(text)),
        }
    }

    fn display(&self) -> String {
        match self {
            TpmPath::Device(path) => path.display().to_string(),
            TpmPath::Unix(path) => format!("unix:{}", path.display()),
        }
    }
}

enum Channel {
    Device(std::fs::File),
    Unix(UnixStream),
}

/// An open TPM. Transient objects (the identity key's handle) live as long as this value.
pub struct Tpm {
    path: String,
    channel: Channel,
}

/// An ECDSA P-256 signature as the TPM returns it (big-endian scalars, leading zeroes kept).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EcdsaSignature {
    pub r: [u8; 32],
    pub s: [u8; 32],
}

impl EcdsaSignature {
    /// The fixed-size `r || s` form (COSE ES256, JOSE).
    pub fn to_fixed(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&self.r);
        out[32..].copy_from_slice(&self.s);
        out
    }
}

/// The result of TPM2_Quote: the TPM-generated attestation structure and its signature.
#[derive(Clone, Debug)]
pub struct Quote {
    /// The marshalled TPMS_ATTEST the TPM signed (signature is over SHA-256 of these bytes).
    pub attest: Vec<u8>,
    pub signature: EcdsaSignature,
}

/// PCR index and SHA-256 value pairs, as TPM2_PCR_Read returns them.
pub type PcrValues = Vec<(u32, [u8; 32])>;

/// A loaded identity key: its transient handle and its public point.
#[derive(Clone, Debug)]
pub struct TpmKey {
    pub handle: u32,
    /// SEC1 uncompressed point (0x04 || X || Y).
    pub public_sec1: Vec<u8>,
}

impl Tpm {
    pub fn open(path: &TpmPath) -> Result<Tpm, TpmError> {
        let display = path.display();
        let io = |source| TpmError::Io { path: display.clone(), source };
        let channel = match path {
            TpmPath::Device(device) => {
                Channel::Device(std::fs::OpenOptions::new().read(true).write(true).open(device).map_err(io)?)
            }
            TpmPath::Unix(socket) => Channel::Unix(UnixStream::connect(socket).map_err(io)?),
        };
        let mut tpm = Tpm { path: display, channel };
        // A bare simulator needs TPM2_Startup(CLEAR); a kernel-managed TPM is already started and
        // answers TPM_RC_INITIALIZE, which we take as "already started".
        if let TpmPath::Unix(_) = path {
            let mut cmd = Command::new(ST_NO_SESSIONS, CC_STARTUP);
            cmd.u16(0x0000); // TPM_SU_CLEAR
            match tpm.execute(cmd) {
                Ok(_) => {}
                Err(TpmError::Response { code: RC_INITIALIZE, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(tpm)
    }

    /// Whether a TPM device node exists at `path` (no I/O beyond a stat).
    pub fn present(path: &Path) -> bool {
        path.exists()
    }

    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>, TpmError> {
        let path = self.path.clone();
        let io = |source| TpmError::Io { path: path.clone(), source };
        match &mut self.channel {
            Channel::Device(file) => {
                // The TPM character devices take one whole command per write and return one
                // whole response per read.
                file.write_all(command).map_err(io)?;
                let mut buf = vec![0u8; MAX_RESPONSE];
                let n = file.read(&mut buf).map_err(io)?;
                buf.truncate(n);
                Ok(buf)
            }
            Channel::Unix(stream) => {
                stream.write_all(command).map_err(io)?;
                let mut header = [0u8; 10];
                stream.read_exact(&mut header).map_err(io)?;
                let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
                if !(10..=MAX_RESPONSE).contains(&size) {
                    return Err(TpmError::Malformed { command: 0, what: "response size out of range" });
                }
                let mut buf = header.to_vec();
                buf.resize(size, 0);
                stream.read_exact(&mut buf[10..]).map_err(io)?;
                Ok(buf)
            }
        }
    }

    /// Send a command; return the response body after the 10-byte header (response code 0).
    fn execute(&mut self, command: Command) -> Result<Vec<u8>, TpmError> {
        let code = command.code;
        let bytes = command.finish();
        let response = self.transact(&bytes)?;
        if response.len() < 10 {
            return Err(TpmError::Malformed { command: code, what: "response shorter than its header" });
        }
        let size = u32::from_be_bytes([response[2], response[3], response[4], response[5]]) as usize;
        if size != response.len() {
            return Err(TpmError::Malformed { command: code, what: "response size does not match its header" });
        }
        let rc = u32::from_be_bytes([response[6], response[7], response[8], response[9]]);
        if rc != 0 {
            return Err(TpmError::Response { command: code, code: rc, meaning: describe_rc(rc) });
        }
        Ok(response[10..].to_vec())
    }

    /// TPM2_GetRandom: up to 32 bytes per call from the TPM's RNG.
    pub fn get_random(&mut self, count: u16) -> Result<Vec<u8>, TpmError> {
        let mut cmd = Command::new(ST_NO_SESSIONS, CC_GET_RANDOM);
        cmd.u16(count);
        let body = self.execute(cmd)?;
        let mut r = Reader::new(&body, CC_GET_RANDOM);
        Ok(r.tpm2b()?.to_vec())
    }

    /// TPM2_CreatePrimary of the device identity key under the owner hierarchy: ECC NIST P-256,
    /// ECDSA/SHA-256, fixedTPM + fixedParent (never exportable, not even wrapped),
    /// sensitiveDataOrigin (the TPM generated it), userWithAuth with an empty auth, sign only.
    pub fn create_identity_key(&mut self) -> Result<TpmKey, TpmError> {
        let mut cmd = Command::new(ST_SESSIONS, CC_CREATE_PRIMARY);
        cmd.u32(RH_OWNER);
        cmd.password_session();
        // TPM2B_SENSITIVE_CREATE { userAuth = empty, data = empty }
        cmd.u16(4);
        cmd.u16(0);
        cmd.u16(0);
        // TPM2B_PUBLIC
        let template = identity_template();
        cmd.tpm2b(&template);
        cmd.u16(0); // outsideInfo
        cmd.u32(0); // creationPCR: none
        let body = self.execute(cmd)?;
        let mut r = Reader::new(&body, CC_CREATE_PRIMARY);
        let handle = r.u32()?;
        let _parameter_size = r.u32()?;
        let public = r.tpm2b()?;
        let public_sec1 = parse_ecc_public(public, CC_CREATE_PRIMARY)?;
        Ok(TpmKey { handle, public_sec1 })
    }

    /// TPM2_FlushContext: drop a transient object.
    pub fn flush(&mut self, handle: u32) -> Result<(), TpmError> {
        let mut cmd = Command::new(ST_NO_SESSIONS, CC_FLUSH_CONTEXT);
        cmd.u32(handle);
        self.execute(cmd).map(|_| ())
    }

    /// TPM2_Sign of a SHA-256 digest with ECDSA. The key is unrestricted, so the TPM takes a
    /// NULL hash-check ticket: it signs any digest (we hash outside, as COSE/X.509 need).
    pub fn sign_digest(&mut self, key: u32, digest: &[u8; 32]) -> Result<EcdsaSignature, TpmError> {
        let mut cmd = Command::new(ST_SESSIONS, CC_SIGN);
        cmd.u32(key);
        cmd.password_session();
        cmd.tpm2b(digest);
        cmd.u16(ALG_ECDSA);
        cmd.u16(ALG_SHA256);
        cmd.u16(ST_HASHCHECK);
        cmd.u32(RH_NULL);
        cmd.u16(0);
        let body = self.execute(cmd)?;
        let mut r = Reader::new(&body, CC_SIGN);
        let _parameter_size = r.u32()?;
        r.ecdsa_signature()
    }

    /// TPM2_Quote over the SHA-256 bank's `pcrs`, with `qualifying_data` (the cloud's nonce, or
    /// its digest; at most 64 bytes) inside the signed structure.
    pub fn quote(&mut self, key: u32, qualifying_data: &[u8], pcrs: &[u32]) -> Result<Quote, TpmError> {
        if qualifying_data.len() > 64 {
            return Err(TpmError::Argument("quote qualifying data is longer than 64 bytes"));
        }
        let mut cmd = Command::new(ST_SESSIONS, CC_QUOTE);
        cmd.u32(key);
        cmd.password_session();
        cmd.tpm2b(qualifying_data);
        cmd.u16(ALG_ECDSA);
        cmd.u16(ALG_SHA256);
        cmd.pcr_selection(pcrs)?;
        let body = self.execute(cmd)?;
        let mut r = Reader::new(&body, CC_QUOTE);
        let _parameter_size = r.u32()?;
        let attest = r.tpm2b()?.to_vec();
        let signature = r.ecdsa_signature()?;
        Ok(Quote { attest, signature })
    }

    /// TPM2_PCR_Extend of the SHA-256 bank: PCR := SHA-256(PCR || digest).
    pub fn pcr_extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<(), TpmError> {
        if pcr > 23 {
            return Err(TpmError::Argument("PCR index above 23"));
        }
        let mut cmd = Command::new(ST_SESSIONS, CC_PCR_EXTEND);
        cmd.u32(pcr);
        cmd.password_session();
        cmd.u32(1); // TPML_DIGEST_VALUES.count
        cmd.u16(ALG_SHA256);
        cmd.bytes(digest);
        self.execute(cmd).map(|_| ())
    }

    /// TPM2_PCR_Read of SHA-256 PCRs (at most 8 per call: the TPM's response limit).
    pub fn pcr_read(&mut self, pcrs: &[u32]) -> Result<PcrValues, TpmError> {
        if pcrs.len() > 8 {
            return Err(TpmError::Argument("read at most 8 PCRs at once"));
        }
        let mut cmd = Command::new(ST_NO_SESSIONS, CC_PCR_READ);
        cmd.pcr_selection(pcrs)?;
        let body = self.execute(cmd)?;
        let mut r = Reader::new(&body, CC_PCR_READ);
        let _update_counter = r.u32()?;
        // The selection that was actually read, which may be smaller than asked for.
        let selected = r.pcr_selection()?;
        let count = r.u32()? as usize;
        if count != selected.len() {
            return Err(TpmError::Malformed { command: CC_PCR_READ, what: "digest count differs from selection" });
        }
        let mut out = Vec::with_capacity(count);
        for pcr in selected {
            let value = r.tpm2b()?;
            let value: [u8; 32] = value
                .try_into()
                .map_err(|_| TpmError::Malformed { command: CC_PCR_READ, what: "PCR value is not 32 bytes" })?;
            out.push((pcr, value));
        }
        Ok(out)
    }
}

/// The TPMT_PUBLIC template of the identity key.
fn identity_template() -> Vec<u8> {
    let mut t = Command::raw();
    t.u16(ALG_ECC);
    t.u16(ALG_SHA256); // nameAlg
    // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | sign
    let attributes: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 10) | (1 << 18);
    t.u32(attributes);
    t.u16(0); // authPolicy: none
    t.u16(ALG_NULL); // symmetric: none (not a storage key)
    t.u16(ALG_ECDSA); // scheme
    t.u16(ALG_SHA256);
    t.u16(ECC_NIST_P256);
    t.u16(ALG_NULL); // kdf
    t.tpm2b(IDENTITY_UNIQUE); // unique.x
    t.u16(0); // unique.y
    t.buf
}

/// The SEC1 point of an ECC TPMT_PUBLIC (inside the TPM2B_PUBLIC's bytes).
fn parse_ecc_public(public: &[u8], command: u32) -> Result<Vec<u8>, TpmError> {
    let mut r = Reader::new(public, command);
    if r.u16()? != ALG_ECC {
        return Err(TpmError::Malformed { command, what: "public area is not an ECC key" });
    }
    let _name_alg = r.u16()?;
    let _attributes = r.u32()?;
    let _policy = r.tpm2b()?;
    if r.u16()? != ALG_NULL {
        // symmetric keyBits + mode
        r.u16()?;
        r.u16()?;
    }
    if r.u16()? != ALG_NULL {
        r.u16()?; // scheme hash
    }
    if r.u16()? != ECC_NIST_P256 {
        return Err(TpmError::Malformed { command, what: "key is not on NIST P-256" });
    }
    if r.u16()? != ALG_NULL {
        r.u16()?; // kdf hash
    }
    let x = r.tpm2b()?;
    let y = r.tpm2b()?;
    if x.len() > 32 || y.len() > 32 {
        return Err(TpmError::Malformed { command, what: "ECC coordinate longer than 32 bytes" });
    }
    let mut point = vec![0x04];
    point.extend(std::iter::repeat_n(0, 32 - x.len()));
    point.extend_from_slice(x);
    point.extend(std::iter::repeat_n(0, 32 - y.len()));
    point.extend_from_slice(y);
    Ok(point)
}

/// What a verifier learns from a quote's TPMS_ATTEST (after checking its signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuoteInfo {
    pub extra_data: Vec<u8>,
    pub pcrs: Vec<u32>,
    pub pcr_digest: Vec<u8>,
    pub reset_count: u32,
    pub restart_count: u32,
}

/// Parse a TPMS_ATTEST of type quote (for tests and verifiers; the signature is checked apart).
pub fn parse_quote(attest: &[u8]) -> Result<QuoteInfo, TpmError> {
    let mut r = Reader::new(attest, CC_QUOTE);
    if r.u32()? != TPM_GENERATED_VALUE {
        return Err(TpmError::Malformed { command: CC_QUOTE, what: "attestation lacks TPM_GENERATED_VALUE" });
    }
    if r.u16()? != ST_ATTEST_QUOTE {
        return Err(TpmError::Malformed { command: CC_QUOTE, what: "attestation is not a quote" });
    }
    let _signer = r.tpm2b()?;
    let extra_data = r.tpm2b()?.to_vec();
    let _clock = r.u64()?;
    let reset_count = r.u32()?;
    let restart_count = r.u32()?;
    let _safe = r.u8()?;
    let _firmware = r.u64()?;
    let pcrs = r.pcr_selection()?;
    let pcr_digest = r.tpm2b()?.to_vec();
    Ok(QuoteInfo { extra_data, pcrs, pcr_digest, reset_count, restart_count })
}

fn describe_rc(rc: u32) -> &'static str {
    // Format-one codes (bit 7) carry a parameter/handle/session number in bits 6 and 8-11.
    let base = if rc & 0x80 != 0 { rc & 0xBF } else { rc };
    match base {
        0x100 => "TPM_RC_INITIALIZE: TPM2_Startup not run",
        0x101 => "TPM_RC_FAILURE: the TPM is in failure mode",
        0x143 => "TPM_RC_COMMAND_CODE: command not supported",
        0x084 => "TPM_RC_VALUE: a parameter is out of range",
        0x085 => "TPM_RC_HIERARCHY: hierarchy disabled",
        0x08B => "TPM_RC_HANDLE: bad handle",
        0x08E => "TPM_RC_AUTH_FAIL: wrong authorization (is an owner password set?)",
        0x0A2 => "TPM_RC_BAD_AUTH: wrong authorization",
        0x902 => "TPM_RC_OBJECT_MEMORY: out of object slots",
        0x903 => "TPM_RC_SESSION_MEMORY: out of session slots",
        0x908 => "TPM_RC_YIELDED: try again",
        0x909 => "TPM_RC_CANCELED",
        0x90A => "TPM_RC_TESTING: self test running, try again",
        0x921 => "TPM_RC_LOCKOUT: dictionary-attack lockout",
        0x922 => "TPM_RC_RETRY: busy, try again",
        _ => "see TPM 2.0 Part 2, TPM_RC",
    }
}

/// A command being marshalled (big-endian, as all TPM structures).
struct Command {
    code: u32,
    buf: Vec<u8>,
}

impl Command {
    fn new(tag: u16, code: u32) -> Command {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&tag.to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 0]); // size, patched in finish()
        buf.extend_from_slice(&code.to_be_bytes());
        Command { code, buf }
    }
    fn raw() -> Command {
        Command { code: 0, buf: Vec::new() }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    fn tpm2b(&mut self, v: &[u8]) {
        // Callers pass bounded data (digests, templates, nonces <= 64 bytes).
        self.u16(v.len() as u16);
        self.bytes(v);
    }
    /// The authorization area with one password session (TPM_RS_PW) and an empty password.
    fn password_session(&mut self) {
        self.u32(9); // authorizationSize
        self.u32(RS_PW);
        self.u16(0); // nonceCaller
        self.u8(0); // sessionAttributes
        self.u16(0); // hmac = password: empty
    }
    /// TPML_PCR_SELECTION with one SHA-256 bank.
    fn pcr_selection(&mut self, pcrs: &[u32]) -> Result<(), TpmError> {
        let mut select = [0u8; 3];
        for &pcr in pcrs {
            if pcr > 23 {
                return Err(TpmError::Argument("PCR index above 23"));
            }
            select[(pcr / 8) as usize] |= 1 << (pcr % 8);
        }
        self.u32(1);
        self.u16(ALG_SHA256);
        self.u8(3);
        self.bytes(&select);
        Ok(())
    }
    fn finish(mut self) -> Vec<u8> {
        let size = (self.buf.len() as u32).to_be_bytes();
        self.buf[2..6].copy_from_slice(&size);
        self.buf
    }
}

/// A bounds-checked reader over a response.
struct Reader<'a> {
    data: &'a [u8],
    command: u32,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8], command: u32) -> Reader<'a> {
        Reader { data, command }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        if self.data.len() < n {
            return Err(TpmError::Malformed { command: self.command, what: "response truncated" });
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, TpmError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TpmError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, TpmError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, TpmError> {
        Ok(((self.u32()? as u64) << 32) | self.u32()? as u64)
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn ecdsa_signature(&mut self) -> Result<EcdsaSignature, TpmError> {
        let command = self.command;
        if self.u16()? != ALG_ECDSA {
            return Err(TpmError::Malformed { command, what: "signature is not ECDSA" });
        }
        let _hash = self.u16()?;
        let r = scalar(self.tpm2b()?, command)?;
        let s = scalar(self.tpm2b()?, command)?;
        Ok(EcdsaSignature { r, s })
    }
    fn pcr_selection(&mut self) -> Result<Vec<u32>, TpmError> {
        let mut pcrs = Vec::new();
        let banks = self.u32()?;
        for _ in 0..banks {
            let hash = self.u16()?;
            let size = self.u8()? as usize;
            let select = self.take(size)?;
            if hash != ALG_SHA256 {
                continue;
            }
            for (byte_index, byte) in select.iter().enumerate() {
                for bit in 0..8 {
                    if byte & (1 << bit) != 0 {
                        pcrs.push((byte_index * 8 + bit) as u32);
                    }
                }
            }
        }
        Ok(pcrs)
    }
}

fn scalar(bytes: &[u8], command: u32) -> Result<[u8; 32], TpmError> {
    if bytes.len() > 32 {
        return Err(TpmError::Malformed { command, what: "ECDSA scalar longer than 32 bytes" });
    }
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(bytes);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_size_is_patched_and_sessions_are_nine_bytes() {
        let mut cmd = Command::new(ST_SESSIONS, CC_PCR_EXTEND);
        cmd.u32(8);
        cmd.password_session();
        let bytes = cmd.finish();
        assert_eq!(bytes.len(), 10 + 4 + 4 + 9);
        assert_eq!(u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize, bytes.len());
    }

    #[test]
    fn truncated_public_area_is_an_error_not_a_panic() {
        let template = identity_template();
        for cut in 0..template.len() {
            assert!(parse_ecc_public(&template[..cut], 0).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn pcr_selection_round_trips() {
        let mut cmd = Command::raw();
        cmd.pcr_selection(&[8, 9, 13, 14]).unwrap();
        let mut r = Reader::new(&cmd.buf, 0);
        assert_eq!(r.pcr_selection().unwrap(), vec![8, 9, 13, 14]);
    }
}
