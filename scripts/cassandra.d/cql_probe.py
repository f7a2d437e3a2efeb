"""Readiness probe used by scripts/cassandra.

Usage: cql_probe.py HOST PORT [--ssl] [--peers N] [--timeout SECONDS] [USER PASSWORD]

Runs the query testcontainers waits on, against HOST only, and prints the
node's release_version on the last line of stdout. It speaks the CQL native
protocol (v4, which every Cassandra from 2.2 to 5.0 accepts) by itself, with
nothing but the Python standard library: any python3 on the machine can tell
whether a node is ready, with or without cassandra-driver installed.

--ssl speaks TLS without checking the node's certificate: the probe only asks
whether the node is up, not who it is.
USER PASSWORD answer the node's authentication request (PasswordAuthenticator)
with SASL PLAIN.
--peers N also requires the node to know N peers and their schema version
(gossip has settled: a node that does not know a peer yet leaves it out of
the schema agreement clients wait for after DDL).
--timeout bounds the whole exchange (default 5 s): a hung node, or a server
that accepts connections but speaks something else, fails in that time.

Exit status 0 when the node answers CQL, 1 otherwise (the reason, one line,
goes to stderr so the launcher can show it on timeout), 2 on bad arguments.
"""

import socket
import struct
import sys
import time

DEFAULT_TIMEOUT = 5.0
PROTOCOL_VERSION = 4
RESPONSE = 0x80  # direction bit of a frame's version byte ...
VERSION_MASK = 0x7F  # ... and the protocol version in the rest of it
HEADER = struct.Struct(">BBhBi")  # version, flags, stream, opcode, body length
MAX_BODY = 256 * 1024 * 1024  # the spec's frame limit
# An alias of TimeoutError from Python 3.10 on, but not before, and any
# python3 may run this probe.
SOCKET_TIMEOUT = socket.timeout

# Opcodes (native_protocol_v4.spec, section 2.4).
ERROR = 0x00
STARTUP = 0x01
READY = 0x02
AUTHENTICATE = 0x03
OPTIONS = 0x05
SUPPORTED = 0x06
QUERY = 0x07
RESULT = 0x08
AUTH_CHALLENGE = 0x0E
AUTH_RESPONSE = 0x0F
AUTH_SUCCESS = 0x10
OPCODE_NAMES = {
    ERROR: "ERROR",
    STARTUP: "STARTUP",
    READY: "READY",
    AUTHENTICATE: "AUTHENTICATE",
    OPTIONS: "OPTIONS",
    SUPPORTED: "SUPPORTED",
    QUERY: "QUERY",
    RESULT: "RESULT",
    0x0C: "EVENT",
    AUTH_CHALLENGE: "AUTH_CHALLENGE",
    AUTH_RESPONSE: "AUTH_RESPONSE",
    AUTH_SUCCESS: "AUTH_SUCCESS",
}

# Response frame flags (section 2.2) whose content precedes the body proper.
FLAG_TRACING = 0x02
FLAG_CUSTOM_PAYLOAD = 0x04
FLAG_WARNING = 0x08

CONSISTENCY_ONE = 0x0001
RESULT_ROWS = 0x0002
# Rows metadata flags (section 4.2.5.2).
ROWS_GLOBAL_TABLE_SPEC = 0x0001
ROWS_HAS_MORE_PAGES = 0x0002
ROWS_NO_METADATA = 0x0004

# Error codes (section 9).
ERROR_NAMES = {
    0x0000: "server error",
    0x000A: "protocol error",
    0x0100: "authentication failed",
    0x1000: "unavailable",
    0x1001: "overloaded",
    0x1002: "bootstrapping",
    0x1100: "write timeout",
    0x1200: "read timeout",
    0x1300: "read failure",
    0x2000: "syntax error",
    0x2100: "unauthorized",
    0x2200: "invalid query",
    0x2300: "config error",
}


class ProbeError(Exception):
    """The node does not answer CQL (yet); the message says why, in one line."""


class UsageError(Exception):
    pass


class Reader:
    """Reads the notations of the spec's section 3 off a frame body."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    def take(self, n):
        if n < 0 or self.at + n > len(self.data):
            raise ProbeError("the node sent a truncated message")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def read_short(self):
        return struct.unpack(">H", self.take(2))[0]

    def read_int(self):
        return struct.unpack(">i", self.take(4))[0]

    def read_string(self):
        return self.take(self.read_short()).decode("utf-8", "replace")

    def read_string_list(self):
        return [self.read_string() for _ in range(self.read_short())]

    def read_bytes(self):
        n = self.read_int()
        return None if n < 0 else self.take(n)

    def skip_bytes_map(self):
        for _ in range(self.read_short()):
            self.read_string()
            self.read_bytes()

    def skip_type(self):
        """Skips a column type ([option]): native types have no value."""
        kind = self.read_short()
        if kind == 0x0000:  # custom: the type's class name
            self.read_string()
        elif kind in (0x0020, 0x0022):  # list, set: the element type
            self.skip_type()
        elif kind == 0x0021:  # map: key and value types
            self.skip_type()
            self.skip_type()
        elif kind == 0x0030:  # UDT: keyspace, name, then (field name, type) pairs
            self.read_string()
            self.read_string()
            for _ in range(self.read_short()):
                self.read_string()
                self.skip_type()
        elif kind == 0x0031:  # tuple: its component types
            for _ in range(self.read_short()):
                self.skip_type()


def encode_string(text):
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def encode_long_string(text):
    data = text.encode("utf-8")
    return struct.pack(">i", len(data)) + data


def encode_string_map(mapping):
    return struct.pack(">H", len(mapping)) + b"".join(encode_string(k) + encode_string(v) for k, v in mapping.items())


def encode_bytes(data):
    return struct.pack(">i", len(data)) + data


def opcode_name(opcode):
    return OPCODE_NAMES.get(opcode, f"opcode 0x{opcode:02x}")


def describe_error(body):
    reader = Reader(body)
    code = reader.read_int()
    message = reader.read_string()
    return f"{ERROR_NAMES.get(code, 'error')} (0x{code:04x}): {message}"


class Connection:
    """One connection to one node, used synchronously (one request at a time)."""

    def __init__(self, host, port, use_ssl, timeout):
        self.where = f"{host}:{port}"
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.use_ssl = use_ssl
        self.stream = 0
        self.step = "connecting"
        try:
            self.sock = socket.create_connection((host, port), timeout=self.remaining())
        except SOCKET_TIMEOUT:
            raise ProbeError(f"no TCP connection to {self.where} within {timeout:g} s") from None
        except OSError as exc:
            raise ProbeError(f"cannot connect to {self.where}: {exc.strerror or exc}") from None
        if use_ssl:
            self.start_tls(host)

    def start_tls(self, host):
        try:
            import ssl
        except ImportError:
            self.close()
            raise ProbeError(f"{sys.executable} has no ssl module, which --ssl needs") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.step = "the TLS handshake"
        try:
            self.sock.settimeout(self.remaining())
            self.sock = context.wrap_socket(self.sock)
        except SOCKET_TIMEOUT:
            self.close()
            raise ProbeError(f"{self.where} did not complete a TLS handshake within {self.timeout:g} s") from None
        except (ssl.SSLError, OSError) as exc:
            self.close()
            raise ProbeError(f"TLS handshake with {self.where} failed: {exc}") from None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def remaining(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ProbeError(self.timed_out())
        return left

    def timed_out(self):
        return (
            f"{self.where} did not answer {self.step} within {self.timeout:g} s "
            "(a hung or overloaded node, or a server that does not speak CQL)"
        )

    def closed_early(self, received):
        reason = f"{self.where} closed the connection while the probe waited for the answer to {self.step}"
        if received:
            reason += f", after sending {received[:24]!r}, which is not CQL"
        elif not self.use_ssl:
            reason += " (a node that requires TLS does that to a plain connection: --ssl)"
        return reason

    def receive(self, n):
        data = b""
        while len(data) < n:
            self.sock.settimeout(self.remaining())
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ProbeError(self.closed_early(data))
            data += chunk
        return data

    def request(self, opcode, body=b""):
        """Sends one request; returns the (opcode, body) of its response.
        An ERROR response raises ProbeError with the node's message."""
        self.step = opcode_name(opcode)
        self.stream = self.stream % 32767 + 1
        try:
            self.sock.settimeout(self.remaining())
            self.sock.sendall(HEADER.pack(PROTOCOL_VERSION, 0, self.stream, opcode, len(body)) + body)
            while True:
                header = self.receive(HEADER.size)
                version, flags, stream, answer, length = HEADER.unpack(header)
                if not version & RESPONSE or not 1 <= version & VERSION_MASK <= 6 or not 0 <= length <= MAX_BODY:
                    raise ProbeError(f"{self.where} does not speak the CQL native protocol: it answered {header!r}")
                body = self.receive(length)
                if stream == self.stream:
                    break
                # Anything else (a server-initiated EVENT has stream -1) is not ours.
        except SOCKET_TIMEOUT:
            raise ProbeError(self.timed_out()) from None
        except (ConnectionResetError, BrokenPipeError):
            raise ProbeError(self.closed_early(b"")) from None
        except OSError as exc:
            raise ProbeError(f"connection to {self.where} failed during {self.step}: {exc}") from None
        if version & VERSION_MASK != PROTOCOL_VERSION:
            # A node that cannot speak v4 says so in an ERROR in its own version.
            detail = describe_error(body) if answer == ERROR else opcode_name(answer)
            raise ProbeError(
                f"{self.where} answered in protocol v{version & VERSION_MASK} instead of v{PROTOCOL_VERSION}: {detail}"
            )
        reader = Reader(body)
        if flags & FLAG_TRACING:
            reader.take(16)  # tracing session id
        if flags & FLAG_WARNING:
            reader.read_string_list()
        if flags & FLAG_CUSTOM_PAYLOAD:
            reader.skip_bytes_map()
        body = body[reader.at :]
        if answer == ERROR:
            raise ProbeError(f"{self.where} refused {self.step}: {describe_error(body)}")
        return answer, body

    def expect(self, wanted, opcode, body=b""):
        answer, body = self.request(opcode, body)
        if answer not in wanted:
            raise ProbeError(f"{self.where} answered {opcode_name(opcode)} with {opcode_name(answer)}")
        return answer, body

    def handshake(self, credentials):
        # OPTIONS first, as drivers do: the cheapest proof the other side speaks CQL.
        self.expect((SUPPORTED,), OPTIONS)
        answer, body = self.expect((READY, AUTHENTICATE), STARTUP, encode_string_map({"CQL_VERSION": "3.0.0"}))
        if answer == READY:
            return
        authenticator = Reader(body).read_string()
        if credentials is None:
            raise ProbeError(f"{self.where} requires authentication ({authenticator}): give the probe USER PASSWORD")
        user, password = credentials
        # SASL PLAIN (RFC 4616): empty authorization id, NUL, user, NUL, password.
        token = b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
        answer, _ = self.expect((AUTH_SUCCESS, AUTH_CHALLENGE), AUTH_RESPONSE, encode_bytes(token))
        if answer == AUTH_CHALLENGE:
            raise ProbeError(f"{self.where} wants more than SASL PLAIN from {authenticator}")

    def query(self, cql):
        """Runs cql at consistency ONE; returns its rows as lists of raw cell values."""
        _, body = self.expect((RESULT,), QUERY, encode_long_string(cql) + struct.pack(">HB", CONSISTENCY_ONE, 0))
        reader = Reader(body)
        kind = reader.read_int()
        if kind != RESULT_ROWS:
            raise ProbeError(f"{self.where} answered {cql!r} with a result of kind {kind}, not rows")
        flags = reader.read_int()
        columns = reader.read_int()
        if flags & ROWS_HAS_MORE_PAGES:
            reader.read_bytes()  # paging state
        if not flags & ROWS_NO_METADATA:
            if flags & ROWS_GLOBAL_TABLE_SPEC:
                reader.read_string()  # keyspace
                reader.read_string()  # table
            for _ in range(columns):
                if not flags & ROWS_GLOBAL_TABLE_SPEC:
                    reader.read_string()
                    reader.read_string()
                reader.read_string()  # column name
                reader.skip_type()
        return [[reader.read_bytes() for _ in range(columns)] for _ in range(reader.read_int())]


def format_inet(raw):
    if raw is None:
        return "?"
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    try:
        return socket.inet_ntop(family, raw)
    except (ValueError, OSError):
        return raw.hex()


def probe(host, port, use_ssl=False, credentials=None, peers_wanted=0, timeout=DEFAULT_TIMEOUT):
    """Returns the node's release_version; raises ProbeError when it is not ready."""
    connection = Connection(host, port, use_ssl, timeout)
    try:
        connection.handshake(credentials)
        rows = connection.query("SELECT release_version FROM system.local")
        if not rows or rows[0][0] is None:
            raise ProbeError(f"{connection.where} has no release_version in system.local yet")
        version = rows[0][0].decode("utf-8", "replace")
        if peers_wanted:
            rows = connection.query("SELECT peer, schema_version FROM system.peers")
            known = sorted(format_inet(peer) for peer, schema_version in rows if schema_version)
            if len(known) < peers_wanted:
                raise ProbeError(f"knows {len(known)} of its {peers_wanted} peers yet: {known}")
        return version
    finally:
        connection.close()


def parse_args(args):
    positional = []
    options = {"use_ssl": False, "peers_wanted": 0, "timeout": DEFAULT_TIMEOUT}
    remaining = iter(args)
    for arg in remaining:
        if arg == "--ssl":
            options["use_ssl"] = True
        elif arg in ("--peers", "--timeout"):
            value = next(remaining, None)
            try:
                number = int(value) if arg == "--peers" else float(value)
            except (TypeError, ValueError):
                raise UsageError(f"{arg} needs a number, not {value!r}") from None
            if number < 0 or (arg == "--timeout" and number == 0):
                raise UsageError(f"{arg} must be positive")
            options["peers_wanted" if arg == "--peers" else "timeout"] = number
        else:
            positional.append(arg)
    if len(positional) not in (2, 4):
        raise UsageError("give HOST PORT, and USER PASSWORD for a node that requires authentication")
    try:
        port = int(positional[1])
    except ValueError:
        raise UsageError(f"PORT must be a number, not {positional[1]!r}") from None
    credentials = tuple(positional[2:]) if len(positional) == 4 else None
    return positional[0], port, credentials, options


def main(argv):
    try:
        host, port, credentials, options = parse_args(argv[1:])
    except UsageError as exc:
        print(f"cql_probe.py: {exc}", file=sys.stderr)
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    try:
        version = probe(host, port, credentials=credentials, **options)
    except ProbeError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
