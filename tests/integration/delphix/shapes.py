"""The documented Delphix Masking API shapes (DELPHIX_MASKING_API.md) as JSON-schema expectations.

[V] facts from the API reference are required; [I] ones are noted. Null fields are omitted by the engine,
so no schema allows null.
"""
DATE = r'^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$'   # yyyy-MM-dd'T'HH:mm:ss.SSS+0000
STATUSES = ['QUEUED', 'RUNNING', 'WAITING', 'SUCCEEDED', 'WARNING', 'FAILED', 'CANCELLED']
ID = {'type': 'integer', 'minimum': 1}
DATE_FIELD = {'type': 'string', 'pattern': DATE}

LOGIN = {'type': 'object', 'required': ['Authorization'], 'additionalProperties': False,
         'properties': {'Authorization': {'type': 'string', 'minLength': 1}}}

ERROR = {'type': 'object', 'required': ['errorMessage'], 'additionalProperties': False,
         'properties': {'errorMessage': {'type': 'string', 'minLength': 1, 'maxLength': 255}}}


def page_of(item):
    return {'type': 'object', 'required': ['_pageInfo', 'responseList'], 'additionalProperties': False,
            'properties': {
                '_pageInfo': {'type': 'object', 'required': ['numberOnPage', 'total'], 'additionalProperties': False,
                              'properties': {'numberOnPage': {'type': 'integer', 'minimum': 0},
                                             'total': {'type': 'integer', 'minimum': 0}}},
                'responseList': {'type': 'array', 'items': item}}}


APPLICATION = {'type': 'object', 'required': ['applicationId', 'applicationName'],
               'properties': {'applicationId': ID, 'applicationName': {'type': 'string'}}}

ENVIRONMENT = {'type': 'object', 'required': ['environmentId', 'environmentName', 'applicationId', 'purpose'],
               'properties': {'environmentId': ID, 'environmentName': {'type': 'string'}, 'applicationId': ID,
                              'purpose': {'enum': ['MASK', 'TOKENIZE']}}}

MASKING_JOB = {'type': 'object', 'required': ['maskingJobId', 'jobName', 'rulesetId', 'maxMemory'],
               'not': {'anyOf': [{'required': ['environmentId']}]},   # the job carries no environment id
               'properties': {'maskingJobId': ID, 'jobName': {'type': 'string', 'minLength': 1, 'maxLength': 50},
                              'rulesetId': ID, 'maxMemory': {'type': 'integer', 'minimum': 0},
                              'minMemory': {'type': 'integer', 'minimum': 0},
                              'numInputStreams': {'type': 'integer', 'minimum': 1},
                              'multiTenant': {'type': 'boolean'}, 'onTheFlyMasking': {'type': 'boolean'},
                              'feedbackSize': {'type': 'integer'}, 'failImmediately': {'type': 'boolean'}}}

EXECUTION_FIELDS = ['executionId', 'jobId', 'status', 'rowsMasked', 'rowsTotal', 'bytesProcessed', 'bytesTotal',
                    'startTime', 'endTime', 'submitTime', 'sourceConnectorId', 'targetConnectorId', 'connectorType']
EXECUTION = {'type': 'object', 'required': ['executionId', 'jobId', 'status'],
             'propertyNames': {'enum': EXECUTION_FIELDS},
             'properties': {'executionId': ID, 'jobId': ID, 'status': {'enum': STATUSES},
                            'rowsMasked': {'type': 'integer', 'minimum': 0},
                            'rowsTotal': {'type': 'integer', 'minimum': -1},   # -1 while counting
                            'bytesProcessed': {'type': 'integer', 'minimum': 0},
                            'bytesTotal': {'type': 'integer', 'minimum': 0},
                            'startTime': DATE_FIELD, 'endTime': DATE_FIELD, 'submitTime': DATE_FIELD,
                            'sourceConnectorId': ID, 'targetConnectorId': ID, 'connectorType': {'type': 'string'}}}
EXECUTION_RUNNING = {'allOf': [EXECUTION, {'required': ['startTime'], 'not': {'required': ['endTime']},
                                           'properties': {'status': {'const': 'RUNNING'}}}]}
EXECUTION_QUEUED = {'allOf': [EXECUTION, {'not': {'anyOf': [{'required': ['startTime']}, {'required': ['endTime']}]},
                                          'properties': {'status': {'enum': ['QUEUED', 'WAITING']}}}]}
EXECUTION_DONE = {'allOf': [EXECUTION, {'required': ['startTime', 'endTime', 'rowsMasked', 'rowsTotal'],
                                        'properties': {'status': {'enum': ['SUCCEEDED', 'WARNING', 'FAILED',
                                                                           'CANCELLED']}}}]}

EVENT = {'type': 'object', 'required': ['executionId', 'eventType', 'severity'],
         'properties': {'executionId': ID, 'eventType': {'type': 'string'},
                        'severity': {'enum': ['INFO', 'WARNING', 'ERROR']}}}             # [I] severities
COMPONENT = {'type': 'object', 'required': ['executionId', 'componentName', 'status'],
             'properties': {'executionId': ID, 'componentName': {'type': 'string'}, 'status': {'enum': STATUSES},
                            'rowsMasked': {'type': 'integer'}, 'rowsTotal': {'type': 'integer', 'minimum': -1}}}

SYSTEM_INFORMATION = {'type': 'object', 'required': ['version', 'build', 'totalAllocatedMemoryForJobs',
                                                     'totalAvailableCores'],
                      'properties': {'version': {'type': 'string'}, 'build': {'type': 'string'},
                                     'totalAllocatedMemoryForJobs': {'type': 'integer', 'minimum': 0},
                                     'totalAvailableCores': {'type': 'integer', 'minimum': 1}}}
SETTING = {'type': 'object', 'required': ['settingGroup', 'settingName', 'settingValue'],
           'properties': {'settingGroup': {'type': 'string'}, 'settingName': {'type': 'string'},
                          'settingValue': {'type': 'string'}}}
