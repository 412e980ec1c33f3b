//! The host terminal as the guest's console input: raw mode on a tty (restored on drop),
//! a reader thread, Ctrl-] to detach (as `xl console`). Piped stdin works too (bytes are
//! forwarded as they come; EOF closes the input).

use std::io::Read;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use xen_pv::pv::console::{ConsoleInput, InputEvent};

/// Ctrl-]
const DETACH: u8 = 0x1d;

pub struct Terminal {
    rx: Receiver<InputEvent>,
    saved: Option<libc::termios>,
}

impl Terminal {
    /// Take stdin: raw mode when it is a terminal.
    pub fn stdin() -> Terminal {
        let saved = raw_mode();
        let tty = saved.is_some();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(InputEvent::Closed);
                        return;
                    }
                    Ok(n) => {
                        let b = &buf[..n];
                        if tty {
                            if let Some(i) = b.iter().position(|&c| c == DETACH) {
                                if i > 0 {
                                    let _ = tx.send(InputEvent::Bytes(b[..i].to_vec()));
                                }
                                let _ = tx.send(InputEvent::Detach);
                                return;
                            }
                        }
                        if tx.send(InputEvent::Bytes(b.to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Terminal { rx, saved }
    }

    /// Whether stdin is a terminal (then the run is interactive).
    pub fn is_tty() -> bool {
        // SAFETY: isatty only inspects the descriptor.
        unsafe { libc::isatty(0) == 1 }
    }
}

/// Put stdin in raw mode; the previous settings, if it is a terminal.
fn raw_mode() -> Option<libc::termios> {
    if !Terminal::is_tty() {
        return None;
    }
    // SAFETY: termios is plain data; tcgetattr fills it for descriptor 0 (checked result).
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a termios for fd 0.
    if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
        return None;
    }
    let saved = t;
    // SAFETY: cfmakeraw edits the struct in place; tcsetattr applies it to fd 0.
    unsafe {
        libc::cfmakeraw(&mut t);
        // Keep output post-processing: the guest's own tty already sends \r\n, and our
        // messages on stderr expect \n to start a new line.
        t.c_oflag |= libc::OPOST | libc::ONLCR;
        libc::tcsetattr(0, libc::TCSANOW, &t);
    }
    Some(saved)
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores the settings read from fd 0 at start.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, &t);
            }
        }
    }
}

impl ConsoleInput for Terminal {
    fn poll(&mut self) -> InputEvent {
        match self.rx.try_recv() {
            Ok(ev) => ev,
            Err(TryRecvError::Empty) => InputEvent::None,
            Err(TryRecvError::Disconnected) => InputEvent::Closed,
        }
    }

    fn wait(&mut self, timeout: Option<Duration>) -> InputEvent {
        match timeout {
            None => self.rx.recv().unwrap_or(InputEvent::Closed),
            Some(t) => match self.rx.recv_timeout(t) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) => InputEvent::None,
                Err(RecvTimeoutError::Disconnected) => InputEvent::Closed,
            },
        }
    }
}
