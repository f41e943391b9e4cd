//! The command tables: one row per Tyrant binary command, the single place a
//! command's identity lives, and one row per text-dialect command ([`TextCommand`]:
//! memcached commands and HTTP methods served on the same port).
//!
//! A row gives, in order: the variant name (of [`Command`] and of
//! [`Request`](super::request::Request)); the byte after `C8`; the [`cmd`] const
//! naming that byte; the command's name (tcrmgr, logs, metrics); its `ttserver -mask`
//! name, which `--tyrant-deny` matches; the name of its `stat` counter (`cnt_<name>`);
//! the request's fields in wire order with their [layout](super::wire::layout); the
//! [`ReplyShape`] a client reads; the [`Masked`] answer sent when it is denied; and
//! the handler method on `Connection` (`commands.rs`) that runs it.
//!
//! In ttserver 1.1.41 the three names coincide for every binary command; they stay
//! separate columns because each is looked up by a different caller.
//!
//! Rows are in ttserver's dispatch order, which is also the order of the `cnt_*`
//! lines in `stat`. The table is a macro, [`command_table!`], that hands the rows to
//! another macro: this module expands them into [`Command`] and [`cmd`];
//! `request.rs` into `Request` and its decoder; `client.rs` into the request encoder;
//! `commands.rs` into the dispatch to handlers. Adding a command is one row here plus
//! its handler (the compiler names whatever else is missing). Wire layouts, replies
//! and deliberate differences: `docs/tyrant-protocol.md`.

/// The command table (see the module docs for the columns). `command_table!(m)`
/// hands `m!` three views of it, each one section of the rows:
/// `identity { Variant CONST byte name mask stat reply masked; ... }`,
/// `layouts { #[doc] Variant { field: Type = KIND, ... }; ... }` and
/// `handlers { Variant { field, ... } => handler; ... }`.
macro_rules! command_table {
    ($expand:ident) => {
        command_table! { @views $expand;
            /// `C8 10`
            Put = 0x10, PUT, "put", "put", "put",
                { key: Vec<u8> = KEY, value: Vec<u8> = VALUE }
                => Status, Fail, on_put;
            /// `C8 11`
            PutKeep = 0x11, PUTKEEP, "putkeep", "putkeep", "putkeep",
                { key: Vec<u8> = KEY, value: Vec<u8> = VALUE }
                => Status, Fail, on_putkeep;
            /// `C8 12`
            PutCat = 0x12, PUTCAT, "putcat", "putcat", "putcat",
                { key: Vec<u8> = KEY, value: Vec<u8> = VALUE }
                => Status, Fail, on_putcat;
            /// `C8 13`; `width` is never negative in a decoded request.
            PutShl = 0x13, PUTSHL, "putshl", "putshl", "putshl",
                { key: Vec<u8> = KEY, value: Vec<u8> = VALUE, width: i32 = WIDTH }
                => Status, Fail, on_putshl;
            /// `C8 18`; the server sends no reply at all.
            PutNr = 0x18, PUTNR, "putnr", "putnr", "putnr",
                { key: Vec<u8> = KEY, value: Vec<u8> = VALUE }
                => Silent, Silent, on_putnr;
            /// `C8 20`
            Out = 0x20, OUT, "out", "out", "out",
                { key: Vec<u8> = KEY }
                => Status, Fail, on_out;
            /// `C8 30`
            Get = 0x30, GET, "get", "get", "get",
                { key: Vec<u8> = KEY }
                => Blob, Fail, on_get;
            /// `C8 31`
            Mget = 0x31, MGET, "mget", "mget", "mget",
                { keys: Vec<Vec<u8>> = KEYS }
                => KvList, EmptyList, on_mget;
            /// `C8 38`
            Vsiz = 0x38, VSIZ, "vsiz", "vsiz", "vsiz",
                { key: Vec<u8> = KEY }
                => U32, Fail, on_vsiz;
            /// `C8 50`
            IterInit = 0x50, ITERINIT, "iterinit", "iterinit", "iterinit",
                => Status, Fail, on_iterinit;
            /// `C8 51`
            IterNext = 0x51, ITERNEXT, "iternext", "iternext", "iternext",
                => Blob, Fail, on_iternext;
            /// `C8 58`; a negative `max` means unlimited.
            Fwmkeys = 0x58, FWMKEYS, "fwmkeys", "fwmkeys", "fwmkeys",
                { prefix: Vec<u8> = PREFIX, max: i32 = I32 }
                => List, EmptyList, on_fwmkeys;
            /// `C8 60`
            AddInt = 0x60, ADDINT, "addint", "addint", "addint",
                { key: Vec<u8> = KEY, num: i32 = I32 }
                => I32, Fail, on_addint;
            /// `C8 61`; the number in wire form, see
            /// [`double_from_wire`](super::wire::double_from_wire).
            AddDouble = 0x61, ADDDOUBLE, "adddouble", "adddouble", "adddouble",
                { key: Vec<u8> = KEY, integ: i64 = I64, fract: i64 = I64 }
                => Double, Fail, on_adddouble;
            /// `C8 68`
            Ext = 0x68, EXT, "ext", "ext", "ext",
                { name: Vec<u8> = NAME, opts: u32 = U32, key: Vec<u8> = KEY, value: Vec<u8> = VALUE }
                => Blob, Fail, on_ext;
            /// `C8 70`
            Sync = 0x70, SYNC, "sync", "sync", "sync",
                => Status, Fail, on_sync;
            /// `C8 71`
            Optimize = 0x71, OPTIMIZE, "optimize", "optimize", "optimize",
                { params: Vec<u8> = PARAMS }
                => Status, Fail, on_optimize;
            /// `C8 72`
            Vanish = 0x72, VANISH, "vanish", "vanish", "vanish",
                => Status, Fail, on_vanish;
            /// `C8 73`
            Copy = 0x73, COPY, "copy", "copy", "copy",
                { path: Vec<u8> = PATH }
                => Status, Fail, on_copy;
            /// `C8 74`
            Restore = 0x74, RESTORE, "restore", "restore", "restore",
                { path: Vec<u8> = PATH, timestamp: u64 = U64, opts: u32 = U32 }
                => Status, Fail, on_restore;
            /// `C8 78`; `port` is never negative in a decoded request.
            SetMst = 0x78, SETMST, "setmst", "setmst", "setmst",
                { host: Vec<u8> = HOST, port: i32 = PORT, timestamp: u64 = U64, opts: u32 = U32 }
                => Status, Fail, on_setmst;
            /// `C8 80`
            Rnum = 0x80, RNUM, "rnum", "rnum", "rnum",
                => U64, Zero, on_rnum;
            /// `C8 81`
            Size = 0x81, SIZE, "size", "size", "size",
                => U64, Zero, on_size;
            /// `C8 88`
            Stat = 0x88, STAT, "stat", "stat", "stat",
                => Blob, Counters, on_stat;
            /// `C8 90`
            Misc = 0x90, MISC, "misc", "misc", "misc",
                { name: Vec<u8> = NAME, opts: u32 = U32, args: Vec<Vec<u8>> = ARGS }
                => MiscList, EmptyList, on_misc;
            /// `C8 A0`; in a decoded request `timestamp` is in `1..=i64::MAX` and
            /// `server_id` in `1..=i32::MAX`.
            Repl = 0xA0, REPL, "repl", "repl", "repl",
                { timestamp: u64 = REPL_TS, server_id: u32 = SERVER_ID }
                => ServerId, Close, on_repl;
        }
    };
    (@views $expand:ident; $(
        $(#[$doc:meta])*
        $variant:ident = $byte:literal, $konst:ident, $name:literal, $mask:literal, $stat:literal,
        $({ $($field:ident: $ty:ty = $kind:ident),* })?
        => $reply:ident, $masked:ident, $handler:ident;
    )*) => {
        $expand! {
            identity { $($variant $konst $byte $name $mask $stat $reply $masked;)* }
            layouts { $($(#[$doc])* $variant $({ $($field: $ty = $kind),* })?;)* }
            handlers { $($variant $({ $($field),* })? => $handler;)* }
        }
    };
}
pub(crate) use command_table;

/// What a client reads back for a command (`docs/tyrant-protocol.md`, "Replies").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyShape {
    /// Nothing at all (putnr).
    Silent,
    /// A bare `00`/`01`.
    Status,
    /// `00 len bytes`.
    Blob,
    /// `00 n:u32`.
    U32,
    /// `00 n:i32`.
    I32,
    /// `00 n:u64`.
    U64,
    /// `00 integ:i64 fract:i64`.
    Double,
    /// `00 n {ksiz vsiz key value}×n`; a failure status is followed by a count too.
    KvList,
    /// `00 n {siz bytes}×n`; a failure is a bare status.
    List,
    /// Like [`Self::List`], but a failure status is followed by a count (`01 00000000`).
    MiscList,
    /// repl: the master's server id as `u32`, no status byte, then the update stream.
    ServerId,
}

impl ReplyShape {
    /// Whether a non-zero status is followed by a 4-byte count the client must read.
    pub fn failure_has_count(self) -> bool {
        matches!(self, ReplyShape::KvList | ReplyShape::MiscList)
    }
}

/// How a command refused by `--tyrant-deny` is answered: as ttserver answers one
/// forbidden by `-mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masked {
    /// `01`.
    Fail,
    /// Nothing (putnr never answers).
    Silent,
    /// `00 00000000`: success with an empty list.
    EmptyList,
    /// `00` and a `u64` zero.
    Zero,
    /// `00 len text` with only the `cnt_*` lines of `stat`.
    Counters,
    /// Close the connection without a reply.
    Close,
}

/// Expands the table's `identity` view: [`Command`], [`cmd`] and the lookups.
macro_rules! define_commands {
    (
        identity { $(
            $variant:ident $konst:ident $byte:literal $name:literal $mask:literal $stat:literal
            $reply:ident $masked:ident;
        )* }
        layouts $layouts:tt
        handlers $handlers:tt
    ) => {
        /// A Tyrant binary command, without its fields (those are [`Request`]'s).
        ///
        /// [`Request`]: super::request::Request
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Command {
            $($variant,)*
        }

        /// Command bytes (the byte after [`MAGIC`](super::wire::MAGIC)), as
        /// dispatched by `ttserver`.
        pub mod cmd {
            $(pub const $konst: u8 = $byte;)*

            /// Every command byte `ttserver` 1.1.41 dispatches on; anything else is
            /// an unknown command.
            pub const ALL: [u8; super::Command::COUNT] = [$($konst),*];
        }

        impl Command {
            /// Every command, in table order.
            pub const ALL: [Command; [$($byte),*].len()] = [$(Command::$variant),*];

            /// How many commands there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The byte that follows `C8` on the wire.
            pub const fn byte(self) -> u8 {
                match self {
                    $(Command::$variant => cmd::$konst,)*
                }
            }

            /// The command for a byte after `C8`; `None` = unknown command.
            pub const fn from_byte(byte: u8) -> Option<Command> {
                match byte {
                    $(cmd::$konst => Some(Command::$variant),)*
                    _ => None,
                }
            }

            /// The command's name, as tcrmgr and the logs and metrics say it.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Command::$variant => $name,)*
                }
            }

            /// The name `ttserver -mask` and `--tyrant-deny` refuse it by.
            pub const fn mask_name(self) -> &'static str {
                match self {
                    $(Command::$variant => $mask,)*
                }
            }

            /// The command a `ttserver -mask` / `--tyrant-deny` name refuses.
            pub fn from_mask_name(name: &str) -> Option<Command> {
                Self::ALL.into_iter().find(|c| c.mask_name() == name)
            }

            /// Its counter in `stat`, printed as `cnt_<name>`.
            pub const fn stat_name(self) -> &'static str {
                match self {
                    $(Command::$variant => $stat,)*
                }
            }

            /// What a client reads back.
            pub const fn reply(self) -> ReplyShape {
                match self {
                    $(Command::$variant => ReplyShape::$reply,)*
                }
            }

            /// The answer when the command is denied.
            pub const fn masked(self) -> Masked {
                match self {
                    $(Command::$variant => Masked::$masked,)*
                }
            }

            /// Position in the table (and of its `cnt_*` line), `0..COUNT`.
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

command_table!(define_commands);

/// Which text dialect a [`TextCommand`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Memcached,
    Http,
}

/// The text-dialect table: one row per memcached command and HTTP method ttserver
/// serves on the Tyrant port (`docs/tyrant-protocol.md`, "Text dialects"). A row gives
/// the variant, its dialect, the words that name it on the wire (memcached command
/// words, or the HTTP method; case-sensitive), its `ttserver -mask` name, and the
/// binary command whose `cnt_*` counter it bumps. `quit` has no row: it cannot be
/// masked and counts nothing.
macro_rules! define_text_commands {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $dialect:ident [$($word:literal),+], $mask:literal, $counts:ident;
    )*) => {
        /// A memcached command or HTTP method served on the Tyrant port.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum TextCommand {
            $($(#[$doc])* $variant,)*
        }

        impl TextCommand {
            /// Every text command, in table order.
            pub const ALL: [TextCommand; [$($mask),*].len()] = [$(TextCommand::$variant),*];

            /// How many there are.
            pub const COUNT: usize = Self::ALL.len();

            pub const fn dialect(self) -> Dialect {
                match self {
                    $(TextCommand::$variant => Dialect::$dialect,)*
                }
            }

            /// The words that name it on the wire.
            pub const fn words(self) -> &'static [&'static [u8]] {
                match self {
                    $(TextCommand::$variant => &[$($word),+],)*
                }
            }

            /// The name `ttserver -mask` and `--tyrant-deny` refuse it by.
            pub const fn mask_name(self) -> &'static str {
                match self {
                    $(TextCommand::$variant => $mask,)*
                }
            }

            /// The binary command whose `cnt_*` counter a request of this kind bumps
            /// (`get`/`gets` bump it once per key).
            pub const fn counts_as(self) -> Command {
                match self {
                    $(TextCommand::$variant => Command::$counts,)*
                }
            }

            /// Position in the table, `0..COUNT`.
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

define_text_commands! {
    McSet = Memcached [b"set"], "mcset", Put;
    McAdd = Memcached [b"add"], "mcadd", PutKeep;
    McReplace = Memcached [b"replace"], "mcreplace", Put;
    McAppend = Memcached [b"append"], "mcappend", Put;
    McPrepend = Memcached [b"prepend"], "mcprepend", Put;
    /// `get` and `gets` (answered alike: no cas value).
    McGet = Memcached [b"get", b"gets"], "mcget", Get;
    McDelete = Memcached [b"delete"], "mcdelete", Out;
    McIncr = Memcached [b"incr"], "mcincr", AddInt;
    McDecr = Memcached [b"decr"], "mcdecr", AddInt;
    McStats = Memcached [b"stats"], "mcstats", Stat;
    McFlushAll = Memcached [b"flush_all"], "mcflushall", Vanish;
    McVersion = Memcached [b"version"], "mcversion", Stat;
    HttpGet = Http [b"GET"], "httpget", Get;
    HttpHead = Http [b"HEAD"], "httphead", Vsiz;
    HttpPut = Http [b"PUT"], "httpput", Put;
    /// ext (`X-TT-XNAME`) or misc (`X-TT-MNAME`); both count as ext.
    HttpPost = Http [b"POST"], "httppost", Ext;
    HttpDelete = Http [b"DELETE"], "httpdelete", Out;
    HttpOptions = Http [b"OPTIONS"], "httpoptions", Stat;
}

impl TextCommand {
    /// The command `word` names in `dialect`, if any.
    pub fn from_word(dialect: Dialect, word: &[u8]) -> Option<TextCommand> {
        Self::ALL
            .into_iter()
            .find(|c| c.dialect() == dialect && c.words().contains(&word))
    }

    /// The command a `ttserver -mask` / `--tyrant-deny` name refuses.
    pub fn from_mask_name(name: &str) -> Option<TextCommand> {
        Self::ALL.into_iter().find(|c| c.mask_name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_are_distinct() {
        for (i, command) in Command::ALL.into_iter().enumerate() {
            assert_eq!(command.index(), i);
            assert_eq!(Command::from_byte(command.byte()), Some(command));
            assert_eq!(cmd::ALL[i], command.byte());
            assert_eq!(Command::from_mask_name(command.mask_name()), Some(command));
        }
        let unknown = (0..=u8::MAX).filter(|b| Command::from_byte(*b).is_none());
        assert_eq!(unknown.count(), 256 - Command::COUNT);
    }

    #[test]
    fn rows_are_in_ttserver_order() {
        assert!(cmd::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Command::COUNT, 26);
    }

    #[test]
    fn text_rows_have_distinct_words_and_mask_names() {
        for (i, command) in TextCommand::ALL.into_iter().enumerate() {
            assert_eq!(command.index(), i);
            assert_eq!(
                TextCommand::from_mask_name(command.mask_name()),
                Some(command)
            );
            for word in command.words() {
                assert_eq!(
                    TextCommand::from_word(command.dialect(), word),
                    Some(command)
                );
            }
            assert!(Command::from_mask_name(command.mask_name()).is_none());
        }
        assert_eq!(TextCommand::COUNT, 18);
    }
}
