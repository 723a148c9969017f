"""Triggers: what invokes a function besides a direct Invoke call.

    config.py     the trigger configuration (``$SNAPSTART_HOME/triggers.json``), written by
                  ``snapstart deploy`` (snapstart/deploy), read by ``snapstart serve``
    http.py       function URLs and HttpApi/Api routes on serve's port (payload 2.0/1.0)
    schedule.py   Schedule/ScheduleV2 events (rate(...), AWS cron(...))
    queues.py     event source mappings: RabbitMQ (Amazon MQ shape) and SQS

Every trigger invokes through the manager's normal dispatch (warm, restored or cold)
and is counted in /metrics and the function's logs like any invocation.
"""
