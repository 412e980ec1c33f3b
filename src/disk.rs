//! xl disk specifications (xen docs/man/xl-disk-configuration.5.pod): the strings in an
//! xl.cfg `disk = [ ... ]` list and `--disk`. Positional `target,format,vdev,access` or
//! `key=value` parameters (target last, since it may contain commas), and the virtual
//! device number a vdev names (libxl_device_disk_dev_number / xen docs/misc/vbd-interface).

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    pub target: String,
    /// Only `raw` is supported; `qcow2` etc. are refused with a clear error.
    pub format: String,
    pub vdev: String,
    pub writable: bool,
    /// Copy-on-write overlay file (Xenolith extension `overlay=PATH`): writes go there and
    /// the target is opened read-only.
    pub overlay: Option<String>,
    /// The Xen virtual device number (51712 for xvda).
    pub devid: u32,
}

/// The Xen virtual device number of a vdev name: xvdX (202 major, 16 minors per disk;
/// the extended form beyond xvdp), hdX (IDE 3/22), sdX (SCSI 8), or a plain number.
pub fn vdev_number(vdev: &str) -> Option<u32> {
    if let Ok(n) = vdev.parse::<u32>() {
        return Some(n);
    }
    let (prefix, rest) = if let Some(r) = vdev.strip_prefix("xvd") {
        ("xvd", r)
    } else if let Some(r) = vdev.strip_prefix("hd") {
        ("hd", r)
    } else if let Some(r) = vdev.strip_prefix("sd") {
        ("sd", r)
    } else {
        return None;
    };
    let letters: String = rest
        .chars()
        .take_while(|c| c.is_ascii_lowercase())
        .collect();
    let part_s = &rest[letters.len()..];
    if letters.is_empty() || letters.len() > 2 {
        return None;
    }
    // Disk index: a..z = 0..25, aa = 26 ...
    let mut disk: u32 = 0;
    for (i, c) in letters.bytes().enumerate() {
        let v = (c - b'a') as u32;
        disk = if i == 0 { v } else { (disk + 1) * 26 + v };
    }
    let part: u32 = if part_s.is_empty() {
        0
    } else {
        part_s.parse().ok()?
    };
    match prefix {
        "xvd" => {
            if disk < 16 && part < 16 {
                Some((202 << 8) | (disk << 4) | part)
            } else if part < 256 && disk < (1 << 20) {
                Some((1 << 28) | (disk << 8) | part)
            } else {
                None
            }
        }
        "hd" => {
            if disk >= 4 || part >= 64 {
                return None;
            }
            let major = if disk < 2 { 3 } else { 22 };
            Some((major << 8) | ((disk % 2) << 6) | part)
        }
        _ => (disk < 16 && part < 16).then_some((8 << 8) | (disk << 4) | part),
    }
}

/// Parse one disk specification.
pub fn parse(spec: &str) -> Result<DiskSpec> {
    let mut target = None;
    let mut format = None;
    let mut vdev = None;
    let mut access = None;
    let mut overlay = None;
    let mut positional = 0;
    let parts: Vec<&str> = spec.split(',').collect();
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i].trim();
        i += 1;
        if p.is_empty() {
            // An empty positional parameter keeps its default.
            positional += 1;
            continue;
        }
        match p.split_once('=') {
            Some((k, v)) => {
                let v = v.trim().to_string();
                match k.trim() {
                    // target= takes the rest of the string, commas included.
                    "target" => {
                        let mut t = v;
                        for rest in &parts[i..] {
                            t.push(',');
                            t.push_str(rest);
                        }
                        target = Some(t);
                        break;
                    }
                    "format" => format = Some(v),
                    "vdev" => vdev = Some(v),
                    "access" => access = Some(v),
                    "overlay" => overlay = Some(v),
                    "devtype" | "backendtype" | "script" | "backend" => {}
                    k => bail!("disk '{spec}': unknown parameter '{k}'"),
                }
            }
            None => {
                match positional {
                    0 => target = Some(p.to_string()),
                    1 => format = Some(p.to_string()),
                    2 => vdev = Some(p.to_string()),
                    3 => access = Some(p.to_string()),
                    _ => bail!("disk '{spec}': too many positional parameters"),
                }
                positional += 1;
            }
        }
    }
    let target = target
        .filter(|t| !t.is_empty())
        .ok_or_else(|| anyhow::anyhow!("disk '{spec}': no target (image file)"))?;
    let format = format.unwrap_or_else(|| "raw".into());
    if format != "raw" {
        bail!("disk '{spec}': format '{format}' is not supported (only raw)");
    }
    let vdev = vdev.ok_or_else(|| anyhow::anyhow!("disk '{spec}': no vdev (for example xvda)"))?;
    let devid = vdev_number(&vdev)
        .ok_or_else(|| anyhow::anyhow!("disk '{spec}': '{vdev}' is not a virtual device name"))?;
    let writable = match access.as_deref().unwrap_or("rw") {
        "rw" | "w" => true,
        "ro" | "r" => false,
        a => bail!("disk '{spec}': access '{a}' is not r, ro, w or rw"),
    };
    Ok(DiskSpec {
        target,
        format,
        vdev,
        writable,
        overlay,
        devid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_numbers_as_xen_documents_them() {
        assert_eq!(vdev_number("xvda"), Some(51712));
        assert_eq!(vdev_number("xvdb"), Some(51728));
        assert_eq!(vdev_number("xvda1"), Some(51713));
        assert_eq!(vdev_number("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(vdev_number("xvdaa"), Some((1 << 28) | (26 << 8)));
        assert_eq!(vdev_number("hda"), Some(768));
        assert_eq!(vdev_number("hdc"), Some(22 << 8));
        assert_eq!(vdev_number("sdb"), Some(2064));
        assert_eq!(vdev_number("51712"), Some(51712));
        assert_eq!(vdev_number("vda"), None);
        assert_eq!(vdev_number("xvd"), None);
    }

    #[test]
    fn positional_and_keyword_forms() {
        let d = parse("rootfs.img,raw,xvda,rw").unwrap();
        assert_eq!(
            (d.target.as_str(), d.vdev.as_str(), d.writable, d.devid),
            ("rootfs.img", "xvda", true, 51712)
        );
        let d = parse("format=raw, vdev=xvdb, access=ro, target=/tmp/a,b.img").unwrap();
        assert_eq!(
            (d.target.as_str(), d.writable, d.devid),
            ("/tmp/a,b.img", false, 51728)
        );
        let d = parse("base.img,,xvda,rw,overlay=/tmp/o.cow").unwrap();
        assert_eq!(d.overlay.as_deref(), Some("/tmp/o.cow"));
        assert!(parse("x.img,qcow2,xvda")
            .unwrap_err()
            .to_string()
            .contains("qcow2"));
        assert!(parse("x.img,raw,vda")
            .unwrap_err()
            .to_string()
            .contains("vda"));
        assert!(parse("x.img,raw,xvda,rx").is_err());
        assert!(parse(",raw,xvda").is_err());
        assert!(parse("x.img,raw").unwrap_err().to_string().contains("vdev"));
    }
}
