"""Where the lab keeps its state: build/lab under the checkout (gitignored)."""
import os

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def build_dir():
    """The checkout's build/ dir, also when running from the staged copy inside it."""
    explicit = os.environ.get('ORCHESTRA_BUILD_DIR')
    if explicit:
        return explicit
    parts = COLLECTION_ROOT.split(os.sep)
    if 'build' in parts and 'ansible_collections' in parts:
        return os.sep.join(parts[:parts.index('build') + 1])
    return os.path.join(COLLECTION_ROOT, 'build')


def lab_dir(*names):
    path = os.path.join(build_dir(), 'lab', *names)
    os.makedirs(path, exist_ok=True)
    return path
