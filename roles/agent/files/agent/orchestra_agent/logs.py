"""Structured logs: one JSON object per line on stderr. Callers pass extra={'fields': {...}}."""
import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            'time': time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(record.created)) + '.%03dZ' % record.msecs,
            'level': record.levelname.lower(),
            'logger': record.name,
            'message': record.getMessage(),
        }
        entry.update(getattr(record, 'fields', None) or {})
        if record.exc_info:
            entry['exception'] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(level_name, stream=None):
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level_name.upper()))
    # asyncio's and the SDK's own loggers are chatty at debug; keep them at warning.
    for name in ('urllib3', 'docker', 'asyncio'):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
