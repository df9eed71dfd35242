//! The slot writer's SHA-256, streaming.
//!
//! Hashing is half of an install's CPU work (every byte of a 64 MiB image goes through it), so
//! the `aws-lc` feature swaps the portable `sha2` crate for aws-lc's assembly (SHA extensions on
//! x86_64, NEON on the Cortex-A7), which sphere-updated already links for rustls. Measured on
//! the 2-core x86_64 build host: sha2 at `opt-level = "s"` 254 MB/s, at `opt-level = 3`
//! ~1.1 GB/s, aws-lc ~2 GB/s, `openssl speed -evp sha256` 2.06 GB/s. Tools that do not link
//! aws-lc anyway (sphere-init, the `sphere-slots` binary) keep `sha2`: same digest, smaller.

/// SHA-256 over a stream of chunks.
pub struct Sha256Stream {
    #[cfg(feature = "aws-lc")]
    context: aws_lc_rs::digest::Context,
    #[cfg(not(feature = "aws-lc"))]
    context: sha2::Sha256,
}

impl Default for Sha256Stream {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Stream {
    pub fn new() -> Self {
        #[cfg(feature = "aws-lc")]
        let context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        #[cfg(not(feature = "aws-lc"))]
        let context = <sha2::Sha256 as sha2::Digest>::new();
        Sha256Stream { context }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        #[cfg(feature = "aws-lc")]
        self.context.update(chunk);
        #[cfg(not(feature = "aws-lc"))]
        sha2::Digest::update(&mut self.context, chunk);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        #[cfg(feature = "aws-lc")]
        out.copy_from_slice(self.context.finish().as_ref());
        #[cfg(not(feature = "aws-lc"))]
        out.copy_from_slice(&sha2::Digest::finalize(self.context));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_digest_across_chunk_boundaries() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = Sha256Stream::new();
        for chunk in data.chunks(4097) {
            stream.update(chunk);
        }
        let reference: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&data).into();
        assert_eq!(stream.finish(), reference);
        // FIPS 180-2 "abc".
        let mut abc = Sha256Stream::new();
        abc.update(b"abc");
        assert_eq!(hex::encode(abc.finish()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
