//! The console's view of the clients (`GET /admin/api/clients`): the per-client limits and,
//! for the clients the limits or the fair scheduling have held back most (then those with the
//! most connections), what was done to them, as JSON. The same counts are in `/metrics`.

use std::fmt::Write as _;

use super::admission::{most_troubled, Admission};

/// Most clients listed (the console shows the culprits, not a census).
pub(crate) const CLIENTS_LISTED_MAX: usize = 50;

/// The clients' JSON: `{"limits":{…},"remembered":N,"clients":[{…},…]}`, most held back first.
pub(crate) fn clients_json(admission: &Admission) -> Vec<u8> {
    let limits = admission.limits();
    let all = admission.counts();
    let remembered = all.len();
    let mut out = String::with_capacity(256 + CLIENTS_LISTED_MAX * 200);
    let _ = write!(
        out,
        "{{\"limits\":{{\"connections_max\":{},\"connects_per_second\":{},\"connect_burst\":{}}},\"remembered\":{remembered},\"clients\":[",
        limits.connections_max,
        json_number(limits.connects_per_second),
        limits.connect_burst
    );
    for (index, (client, counts)) in most_troubled(all, CLIENTS_LISTED_MAX)
        .into_iter()
        .enumerate()
    {
        if index > 0 {
            out.push(',');
        }
        // A client's label is made of digits, letters, '=', '.', ':' and spaces: no escaping.
        let _ = write!(
            out,
            "{{\"client\":\"{client}\",\"open\":{},\"accepted\":{},\"held\":{},\"held_s\":{},\"refused_connections\":{},\"refused_rate\":{},\"turns_cut_short\":{},\"refusals_held\":{},\"refusals_held_s\":{}}}",
            counts.open,
            counts.accepted,
            counts.held,
            json_number(counts.held_time.as_secs_f64()),
            counts.refused_open,
            counts.refused_rate,
            counts.turns_cut_short,
            counts.refusals_held,
            json_number(counts.refusals_held_time.as_secs_f64())
        );
    }
    out.push_str("]}");
    out.into_bytes()
}

/// A finite number as JSON (the limits and times here are never NaN; 0 stands in if so).
fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else {
        "0".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::admission::ClientLimits;
    use crate::server::client::ClientId;

    #[test]
    fn lists_the_refused_client_first_as_json() {
        let admission = Admission::new(ClientLimits {
            connections_max: 1,
            connects_per_second: 0.0,
            connect_burst: 1,
        });
        let now = tokio::time::Instant::now();
        let quiet = ClientId::Local {
            uid: 0,
            pid: Some(1),
        };
        let noisy = ClientId::Remote("10.0.0.9".parse().unwrap());
        let _open = admission.admit(quiet, now);
        let _first = admission.admit(noisy, now);
        drop(admission.admit(noisy, now));
        let json = String::from_utf8(clients_json(&admission)).unwrap();
        assert_eq!(
            json,
            "{\"limits\":{\"connections_max\":1,\"connects_per_second\":0,\"connect_burst\":1},\"remembered\":2,\"clients\":[\
             {\"client\":\"ip=10.0.0.9\",\"open\":1,\"accepted\":1,\"held\":0,\"held_s\":0,\"refused_connections\":1,\"refused_rate\":0,\"turns_cut_short\":0,\"refusals_held\":0,\"refusals_held_s\":0},\
             {\"client\":\"uid=0 pid=1\",\"open\":1,\"accepted\":1,\"held\":0,\"held_s\":0,\"refused_connections\":0,\"refused_rate\":0,\"turns_cut_short\":0,\"refusals_held\":0,\"refusals_held_s\":0}]}"
        );
    }
}
