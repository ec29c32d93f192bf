//! SeaweedFS's S3 identities, shared by both targets.

use mxstack_spec::{SecretName, Secrets};
use serde_json::{json, Value};

/// An identity's S3 credentials: the current pair and, while `mxstack rotate` replaces it, the
/// pair being introduced (`next.`, Kubernetes) or retired (`previous.`). SeaweedFS accepts every
/// credential an identity lists, so clients may switch in any order; locally it re-reads s3.json
/// on SIGHUP, on Kubernetes the filers roll.
pub fn credentials(secrets: &Secrets, key: SecretName, secret: SecretName) -> Value {
    let pairs = secrets
        .accepted(key)
        .into_iter()
        .zip(secrets.accepted(secret))
        .map(|(k, s)| json!({ "accessKey": k, "secretKey": s }))
        .collect();
    Value::Array(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_lists_the_new_pair_first_and_the_retiring_one_until_it_ends() {
        let mut s = Secrets::generate_all().unwrap();
        let (k, v) = (SecretName::S3AccessKey, SecretName::S3SecretKey);
        let old = credentials(&s, k, v);
        assert_eq!(old.as_array().unwrap().len(), 1);
        s.replace_keeping_previous(k, "NEWACCESSKEY0000000A");
        s.replace_keeping_previous(v, "Nw7pQ2mX9vL4kR8tB3yC6fH1Nw7pQ2mX9vL4kR8tB3yC6fH1");
        let both = credentials(&s, k, v);
        assert_eq!(both[0]["accessKey"], "NEWACCESSKEY0000000A");
        assert_eq!(both[1], old[0]);
        s.drop_previous(k);
        s.drop_previous(v);
        assert_eq!(credentials(&s, k, v).as_array().unwrap().len(), 1);
    }
}
