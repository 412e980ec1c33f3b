//! xl.cfg files (the subset a PV domU uses): `key = value` lines with strings ('..' or
//! ".."), numbers and lists, `#` comments. Keys Xenolith does not support are rejected with
//! a clear error rather than silently ignored, except purely cosmetic ones.

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Num(i64),
    List(Vec<Value>),
}

/// The domain configuration, after the file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct XlConfig {
    pub name: Option<String>,
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    /// The kernel command line as libxl builds it: `cmdline`, else `root=ROOT EXTRA`.
    pub cmdline: Option<String>,
    pub memory_mib: Option<u64>,
    pub disks: Vec<String>,
    pub on_poweroff: Option<String>,
    pub on_crash: Option<String>,
}

fn parse_value(s: &str, line: usize) -> Result<(Value, &str)> {
    let s = s.trim_start();
    if let Some(q) = s.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let rest = &s[1..];
        let Some(end) = rest.find(q) else {
            bail!("line {line}: unterminated string")
        };
        return Ok((Value::Str(rest[..end].to_string()), &rest[end + 1..]));
    }
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(']') {
                return Ok((Value::List(items), r));
            }
            let (v, r) = parse_value(rest, line)?;
            items.push(v);
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with(']') {
                bail!("line {line}: expected ',' or ']' in a list");
            }
        }
    }
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(s.len());
    let tok = &s[..end];
    let n = if let Some(h) = tok.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()
    } else {
        tok.parse().ok()
    };
    match n {
        Some(n) => Ok((Value::Num(n), &s[end..])),
        None => bail!(
            "line {line}: expected a string, number or list, found {:?}",
            s.lines().next().unwrap_or("")
        ),
    }
}

/// Parse the text of an xl.cfg file.
pub fn parse(text: &str) -> Result<XlConfig> {
    let mut c = XlConfig::default();
    let (mut cmdline, mut extra, mut root) = (None, None, None);
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            bail!("line {line}: expected `key = value`")
        };
        let key = k.trim();
        let (val, rest) = parse_value(v, line)?;
        let rest = rest.trim();
        if !(rest.is_empty() || rest.starts_with('#') || rest == ";") {
            bail!("line {line}: unexpected text after the value: {rest:?}");
        }
        let s = |v: &Value| match v {
            Value::Str(s) => Ok(s.clone()),
            _ => bail!("line {line}: {key} must be a string"),
        };
        let n = |v: &Value| match v {
            Value::Num(n) if *n >= 0 => Ok(*n as u64),
            _ => bail!("line {line}: {key} must be a non-negative number"),
        };
        match key {
            "name" => c.name = Some(s(&val)?),
            "type" => {
                let t = s(&val)?;
                if t != "pv" {
                    bail!(
                        "line {line}: type = \"{t}\": Xenolith runs PV guests only (type = \"pv\")"
                    );
                }
            }
            "kernel" => c.kernel = Some(s(&val)?),
            "ramdisk" => c.ramdisk = Some(s(&val)?),
            "cmdline" => cmdline = Some(s(&val)?),
            "extra" => extra = Some(s(&val)?),
            "root" => root = Some(s(&val)?),
            "memory" => c.memory_mib = Some(n(&val)?),
            "maxmem" => {
                n(&val)?;
            }
            "vcpus" | "maxvcpus" => {
                if n(&val)? != 1 {
                    bail!(
                        "line {line}: {key} = {}: Xenolith runs one vCPU per guest so far",
                        n(&val)?
                    );
                }
            }
            "disk" => match &val {
                Value::List(items) => {
                    for it in items {
                        c.disks.push(s(it)?);
                    }
                }
                _ => bail!("line {line}: disk must be a list of strings"),
            },
            "on_poweroff" | "on_crash" | "on_reboot" | "on_watchdog" => {
                let a = s(&val)?;
                if !matches!(
                    a.as_str(),
                    "destroy"
                        | "preserve"
                        | "restart"
                        | "rename-restart"
                        | "coredump-destroy"
                        | "coredump-restart"
                        | "soft-reset"
                ) {
                    bail!("line {line}: {key} = \"{a}\": not an xl action");
                }
                match key {
                    "on_poweroff" => c.on_poweroff = Some(a),
                    "on_crash" => c.on_crash = Some(a),
                    _ => {}
                }
            }
            // Cosmetic or toolstack-only keys.
            "uuid" | "bootloader_args" | "localtime" | "rtc_timeoffset" | "e820_host" | "pvh" => {}
            "vif" | "pci" | "bootloader" | "device_model_version" | "builder" => {
                bail!("line {line}: {key} is not supported by Xenolith yet")
            }
            _ => bail!("line {line}: unknown key {key:?}"),
        }
    }
    c.cmdline = match (cmdline, root, extra) {
        (Some(c), _, _) => Some(c),
        (None, None, None) => None,
        (None, r, e) => {
            let mut parts = Vec::new();
            if let Some(r) = r {
                parts.push(format!("root={r}"));
            }
            if let Some(e) = e {
                parts.push(e);
            }
            Some(parts.join(" "))
        }
    };
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typical_pv_config() {
        let c = parse(
            "# a guest\nname = \"deb\"\ntype = 'pv'\nkernel = '/boot/vmlinuz'\nramdisk = \"/boot/initrd\"\n\
             memory = 512\nvcpus = 1\nroot = '/dev/xvda ro'\nextra = 'console=hvc0'\n\
             disk = [ 'rootfs.img,raw,xvda,rw', ]\non_poweroff = 'destroy'\n",
        )
        .unwrap();
        assert_eq!(c.name.as_deref(), Some("deb"));
        assert_eq!(c.kernel.as_deref(), Some("/boot/vmlinuz"));
        assert_eq!(c.ramdisk.as_deref(), Some("/boot/initrd"));
        assert_eq!(c.memory_mib, Some(512));
        assert_eq!(c.cmdline.as_deref(), Some("root=/dev/xvda ro console=hvc0"));
        assert_eq!(c.disks, vec!["rootfs.img,raw,xvda,rw".to_string()]);
        assert_eq!(c.on_poweroff.as_deref(), Some("destroy"));
    }

    #[test]
    fn cmdline_wins_over_root_and_extra() {
        let c = parse("cmdline = 'a b'\nroot = 'x'\nextra = 'y'").unwrap();
        assert_eq!(c.cmdline.as_deref(), Some("a b"));
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = |t: &str| parse(t).unwrap_err().to_string();
        assert!(e("type = 'hvm'").contains("PV guests only"));
        assert!(e("memory = 'lots'").contains("line 1: memory must be a non-negative number"));
        assert!(e("\nkernel = 'unterminated").contains("line 2: unterminated string"));
        assert!(e("vcpus = 4").contains("one vCPU"));
        assert!(e("bogus = 1").contains("unknown key \"bogus\""));
        assert!(e("disk = [ 'a' 'b' ]").contains("expected ',' or ']'"));
        assert!(e("memory").contains("expected `key = value`"));
        assert!(e("on_crash = 'explode'").contains("not an xl action"));
    }
}
