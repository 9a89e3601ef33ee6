"""Offline stand-in for the get-pip bootstrap script ansible-test downloads.

ansible-test runs it as ``python get_pip.py [pip options] pip==X ...`` inside a
fresh venv. We bootstrap pip from the interpreter's bundled wheel and let pip
itself install the pinned packages from the configured package index.
"""
import subprocess
import sys

DROPPED = {'--no-setuptools', '--no-wheel'}


def main():
    subprocess.check_call([sys.executable, '-m', 'ensurepip', '--default-pip'])
    args = [arg for arg in sys.argv[1:] if arg not in DROPPED]
    subprocess.check_call([sys.executable, '-m', 'pip', 'install'] + args)


if __name__ == '__main__':
    main()
