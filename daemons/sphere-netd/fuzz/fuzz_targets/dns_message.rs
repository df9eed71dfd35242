//! The DNS proxy parses queries from apps and answers from the upstream, both untrusted: no
//! input may panic it, and what it accepts must be self-consistent.
//!
//! * `parse_query`: a question that parses has a lower-case name of at most 253 characters
//!   made of printable labels, and `error_reply` built from it parses back to the same question;
//! * `parse_response`: every TTL offset it reports points at that TTL, so capping it in place
//!   changes that record's TTL (a later name may point into a TTL field, so the rest of the
//!   message may read differently, but never panics).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sphere_netd::dns;

fuzz_target!(|data: &[u8]| {
    if let Ok(question) = dns::parse_query(data) {
        assert!(question.name.len() <= 253, "{}", question.name);
        assert!(!question.name.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(question.end <= data.len());
        let reply = dns::error_reply(data, question.end, dns::RCODE_NXDOMAIN);
        let parsed = dns::parse_response(&reply).expect("an error reply parses");
        assert_eq!(parsed.question, question);
        assert_eq!(parsed.rcode, dns::RCODE_NXDOMAIN);
        assert!(parsed.answers.is_empty());
    }
    if let Ok(response) = dns::parse_response(data) {
        let mut copy = data.to_vec();
        for (i, record) in response.answers.iter().enumerate() {
            dns::set_ttl(&mut copy, record.ttl_offset, record.ttl ^ 0x5a5a);
            if let Ok(again) = dns::parse_response(&copy) {
                if let Some(changed) = again.answers.get(i) {
                    assert_eq!(changed.ttl, record.ttl ^ 0x5a5a);
                }
            }
            dns::set_ttl(&mut copy, record.ttl_offset, record.ttl);
        }
    }
});
