#!/usr/bin/python3
"""A real SMTP server for selfheal's tests: aiosmtpd with STARTTLS required before AUTH,
AUTH PLAIN/LOGIN against one user, and every accepted message saved as <dir>/<n>.eml.

It makes its own throwaway CA and a server certificate for 127.0.0.1/localhost (a self-signed
leaf is not acceptable to rustls), writes the CA to <dir>/../ca.pem for the client's ca_file,
and prints "ready" once it accepts connections.
"""
import argparse
import asyncio
import logging
import warnings
import os
import signal
import ssl
import subprocess
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def make_self_signed(directory):
    """What `openssl req -x509` makes by default with OpenSSL 3: a self-signed certificate
    that is also a CA (basicConstraints CA:TRUE), used as the server's own certificate."""
    key, cert = f"{directory}/self-signed.key", f"{directory}/self-signed.pem"
    if not os.path.exists(cert):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return cert, key


def make_certificates(directory):
    ca_key, ca_cert = f"{directory}/ca.key", f"{directory}/ca.pem"
    key, csr, cert = f"{directory}/server.key", f"{directory}/server.csr", f"{directory}/server.pem"
    extensions = f"{directory}/server.ext"
    if os.path.exists(cert):
        return cert, key
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", ca_key, "-out", ca_cert, "-subj", "/CN=selfheal test CA"], **quiet)
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", csr, "-subj", "/CN=localhost"], **quiet)
    with open(extensions, "w") as ext:
        ext.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                  "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                    "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", extensions], **quiet)
    return cert, key


class SaveMessages:
    def __init__(self, directory, delay):
        self.directory = directory
        self.delay = delay

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            # A slow relay: say that a message is in flight, then take a while to accept it.
            open(os.path.join(self.directory, "..", "data-started"), "w").close()
            await asyncio.sleep(self.delay)
        count = len([n for n in os.listdir(self.directory) if n.endswith(".eml")])
        path = os.path.join(self.directory, f"{count + 1:03}.eml")
        with open(path + ".tmp", "wb") as out:
            out.write(f"X-Test-Envelope-From: {envelope.mail_from}\r\n".encode())
            out.write(f"X-Test-Envelope-To: {','.join(envelope.rcpt_tos)}\r\n".encode())
            out.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Message accepted for delivery"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        if (isinstance(auth_data, LoginPassword)
                and auth_data.login == user.encode() and auth_data.password == password.encode()):
            return AuthResult(success=True)
        # handled=False: aiosmtpd answers "535 5.7.8 Authentication credentials invalid".
        return AuthResult(success=False, handled=False)
    return check


def main():
    # aiosmtpd 1.4 warns about its own use of Session.login_data on every AUTH.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True, help="where accepted messages go")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--delay", type=float, default=0, help="seconds before accepting DATA")
    parser.add_argument("--self-signed", action="store_true",
                        help="serve a self-signed CA:TRUE certificate (written to <dir>/../self-signed.pem)")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    tls_dir = os.path.dirname(os.path.abspath(args.dir))
    cert, key = make_self_signed(tls_dir) if args.self_signed else make_certificates(tls_dir)
    with open(args.password_file) as f:
        password = f.read().strip()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        SaveMessages(args.dir, args.delay), hostname="127.0.0.1", port=args.port,
        server_hostname="localhost",
        tls_context=context, require_starttls=True, auth_require_tls=True,
        authenticator=authenticator(args.user, password),
    )
    controller.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    sys.exit(main())
