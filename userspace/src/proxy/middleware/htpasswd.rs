//! htpasswd files as Traefik reads them: one `user:hash` per line, the hash
//! bcrypt (`$2y$`, `$2a$`, `$2b$`), `{SHA}` (base64 SHA-1) or Apache's
//! `$apr1$` MD5-crypt. Plain `crypt(3)` and clear-text passwords are
//! refused. Errors name the line, never its content: the file holds
//! secrets. Hash comparisons run in constant time.
use std::collections::HashMap;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq as _;

/// A password hash as written in the file.
#[derive(Clone)]
enum Hash {
    Bcrypt(String),
    Sha1([u8; 20]),
    Apr1 { salt: String, encoded: String },
}

/// The users of one htpasswd file.
pub struct Users {
    by_name: HashMap<String, Hash>,
    /// Checked against when the user is unknown, so that an unknown name
    /// costs about what a wrong password does.
    decoy: Option<Hash>,
}

impl Users {
    pub fn parse(text: &str) -> Result<Users, String> {
        let mut by_name = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!("line {number}: expected `user:hash`"));
            };
            if user.is_empty() {
                return Err(format!("line {number}: the user name is empty"));
            }
            let hash = parse_hash(hash).map_err(|why| format!("line {number}: {why}"))?;
            if by_name.insert(user.to_string(), hash).is_some() {
                return Err(format!("line {number}: this user is listed twice"));
            }
        }
        if by_name.is_empty() {
            return Err("the file holds no user; nobody could log in".into());
        }
        let decoy = by_name.values().next().cloned();
        Ok(Users { by_name, decoy })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether `user` exists and `password` matches its hash. Slow on
    /// purpose for bcrypt: call it off the async threads.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.by_name.get(user) {
            Some(hash) => matches(hash, password),
            None => {
                if let Some(decoy) = &self.decoy {
                    let _ = matches(decoy, password);
                }
                false
            }
        }
    }
}

fn parse_hash(hash: &str) -> Result<Hash, &'static str> {
    if hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$") {
        // Checked here so a mangled line is refused at load, not at login.
        hash.parse::<bcrypt::HashParts>()
            .map_err(|_| "this bcrypt hash is malformed")?;
        return Ok(Hash::Bcrypt(hash.to_string()));
    }
    if let Some(encoded) = hash.strip_prefix("{SHA}") {
        let digest = STANDARD
            .decode(encoded)
            .map_err(|_| "this {SHA} hash is not base64")?;
        let digest: [u8; 20] = digest
            .try_into()
            .map_err(|_| "this {SHA} hash is not 20 bytes long")?;
        return Ok(Hash::Sha1(digest));
    }
    if let Some(rest) = hash.strip_prefix("$apr1$") {
        let (salt, encoded) = rest
            .split_once('$')
            .ok_or("this $apr1$ hash has no `$` after its salt")?;
        if salt.len() > 8 || encoded.len() != 22 {
            return Err("this $apr1$ hash is malformed");
        }
        return Ok(Hash::Apr1 {
            salt: salt.to_string(),
            encoded: encoded.to_string(),
        });
    }
    Err(
        "unsupported hash: use bcrypt (htpasswd -B), {SHA} (htpasswd -s) or $apr1$ \
         (htpasswd -m); crypt(3) and clear text are refused",
    )
}

fn matches(hash: &Hash, password: &[u8]) -> bool {
    match hash {
        Hash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        Hash::Sha1(digest) => {
            let got: [u8; 20] = Sha1::digest(password).into();
            got.ct_eq(digest).into()
        }
        Hash::Apr1 { salt, encoded } => {
            let got = apr1(password, salt.as_bytes());
            got.as_bytes().ct_eq(encoded.as_bytes()).into()
        }
    }
}

/// Apache's MD5-crypt (`$apr1$`): the encoded 22 characters after the salt.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let mut alternate = Md5::new();
    alternate.update(password);
    alternate.update(salt);
    alternate.update(password);
    let alternate = alternate.finalize();

    let mut context = Md5::new();
    context.update(password);
    context.update(MAGIC);
    context.update(salt);
    for chunk in (0..password.len()).step_by(16) {
        context.update(&alternate[..(password.len() - chunk).min(16)]);
    }
    let mut bits = password.len();
    while bits > 0 {
        if bits & 1 == 1 {
            context.update([0u8]);
        } else {
            context.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut digest = context.finalize();

    for round in 0..1000 {
        let mut next = Md5::new();
        if round & 1 == 1 {
            next.update(password);
        } else {
            next.update(digest);
        }
        if round % 3 != 0 {
            next.update(salt);
        }
        if round % 7 != 0 {
            next.update(password);
        }
        if round & 1 == 1 {
            next.update(digest);
        } else {
            next.update(password);
        }
        digest = next.finalize();
    }

    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |mut value: u32, count: usize| {
        for _ in 0..count {
            out.push(ALPHABET[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    let d = |i: usize| u32::from(digest[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((d(a) << 16) | (d(b) << 8) | d(c), 4);
    }
    put(d(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apr1_matches_openssl() {
        // `openssl passwd -apr1 -salt abcdefgh password` and
        // `openssl passwd -apr1 -salt 'x1Y/.z' 'pä ss:wörd'`.
        assert_eq!(apr1(b"password", b"abcdefgh"), "FBwExRW4dCc8aL.OvjpIE1");
        assert_eq!(
            apr1("pä ss:wörd".as_bytes(), b"x1Y/.z"),
            "bTrfcQRffKdCAgOzHgVEy1"
        );
    }

    #[test]
    fn every_accepted_scheme_verifies_and_rejects() {
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        let text = format!(
            "# admins\nalice:{bcrypt}\n\
             bob:{{SHA}}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n\
             carol:$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1\n"
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        assert!(users.verify("alice", b"s3cret"));
        assert!(!users.verify("alice", b"s3cret "));
        assert!(users.verify("bob", b"hunter2"));
        assert!(!users.verify("bob", b"hunter3"));
        assert!(users.verify("carol", b"password"));
        assert!(!users.verify("carol", b"Password"));
        assert!(!users.verify("mallory", b"password"));
        assert!(
            !users.verify("Alice", b"s3cret"),
            "names are case-sensitive"
        );
    }

    #[test]
    fn refusals_name_the_line_never_the_content() {
        let cases = [
            ("alice:$apr1$abcdefgh$FBwEx\nbob:plainpass\n", "line 1"),
            (
                "alice:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\nbob:plainpass\n",
                "line 2",
            ),
            ("\n\ndave:rl5zVj0gGqmH.\n", "line 3"),
            ("eve\n", "line 1"),
            ("# nobody\n", "no user"),
            (
                "a:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\na:{SHA}87u9ZqY9S/F0eUBXjsPQEDUw4h0=\n",
                "twice",
            ),
        ];
        for (text, expected) in cases {
            let error = Users::parse(text).err().unwrap();
            assert!(error.contains(expected), "{text:?}: {error}");
            for secret in ["plainpass", "rl5zVj0gGqmH", "FBwEx", "87u9Z", "dave", "eve"] {
                assert!(!error.contains(secret), "{error} leaks {secret}");
            }
        }
    }
}
