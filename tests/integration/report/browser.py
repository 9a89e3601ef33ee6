"""Headless Chromium for the report suite: the rendered DOM, console errors, screenshots (real browser, from disk)."""
import os
import re
import shutil
import subprocess

FLEET_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def logs_dir():
    """build/test-logs of the checkout (the suite runs from the staged copy under build/collections/...)."""
    marker = os.sep + os.path.join('build', 'collections') + os.sep
    if marker in FLEET_ROOT + os.sep:
        base = FLEET_ROOT[:(FLEET_ROOT + os.sep).index(marker)]
    else:
        base = FLEET_ROOT
    path = os.path.join(base, 'build', 'test-logs')
    os.makedirs(path, exist_ok=True)
    return path


# What Chromium logs (--enable-logging=stderr) for the page's console: every console message (it logs them all
# as INFO:CONSOLE, whatever their level; the report logs nothing, so any is an error), uncaught script errors,
# and loads the page tried (the report must load nothing).
CONSOLE_ERROR = re.compile(r':CONSOLE[:(]|Uncaught|Refused to|Not allowed to load|net::ERR_')


class Browser:
    """Runs the Debian package's chromium binary (apt-get install chromium; tests/support/apt-packages.txt)."""

    def __init__(self):
        self.binary = shutil.which('chromium') or shutil.which('chromium-browser')
        if not self.binary:
            raise AssertionError('chromium is not installed: apt-get install -y chromium (see tests/support/apt-packages.txt)')

    def _run(self, path, *args, timeout=90):
        cmd = [self.binary, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr', '--v=0',
               '--user-data-dir=%s' % (os.path.dirname(path) + '/.chromium'), '--no-first-run', '--disable-extensions',
               '--disable-background-networking', '--disable-component-update', '--disable-sync']
        cmd += list(args) + ['file://' + os.path.abspath(path)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
        return proc

    def open(self, path):
        """(rendered DOM after the page's script ran, console error lines)."""
        proc = self._run(path, '--dump-dom', '--virtual-time-budget=2000')
        assert proc.returncode == 0, 'chromium failed (%d): %s' % (proc.returncode, proc.stderr[-2000:])
        return proc.stdout, console_errors(proc.stderr)

    def screenshot(self, path, out, width=1400, height=1500):
        proc = self._run(path, '--screenshot=%s' % out, '--window-size=%d,%d' % (width, height), '--hide-scrollbars')
        assert proc.returncode == 0 and os.path.getsize(out) > 10000, 'no screenshot (%d): %s' % (proc.returncode, proc.stderr[-2000:])
        return out


def console_errors(stderr):
    """The lines of Chromium's log that say the page had a script error, logged an error or tried the network."""
    return [line for line in stderr.splitlines() if CONSOLE_ERROR.search(line)]
