"""Event lines match OpenECPDS's, character for character, so sites keep their Splunk/ELK parsers.

The golden lines are copied verbatim from the OpenECPDS README (seeds/003, "Event Logging").
"""

import sys
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from catalog.events import (
    ErrorEvent,
    EventLog,
    IncomingHistoryEvent,
    ProductStatusEvent,
    ReplicationEvent,
    RetrievalEvent,
    UploadHistoryEvent,
    clean_value,
    cpy_from,
    err_from,
    format_duration,
    format_timestamp,
    inh_from,
    parse_line,
    prs_from,
    ret_from,
    uph_from,
)
from catalog.models import DataFile, DataTransfer, Destination, Host
from catalog.statuses import TransferStatus

PRS_LINE = "PRS;StatusCode=EXEC;DataStream=GWAEF;TimeStep=144;TimeBase=2025-02-12 06:00:00.0;Type=EF;ScheduleTime=2025-02-12 13:04:00.0;LastUpdate=2025-02-12 12:28:44.353"  # noqa: E501
RET_LINE = "RET;Monitored=true;DataTransferId=123456789;DestinationName=MyDestination;DestinationType=Gold;FileName=/my/home/datafile.bin;FileSize=9426076326;ScheduledTime=2025-02-12 13:04:00.0;StartTime=2025-02-12 12:29:43.98;MetaStream=GENFO;MetaType=EF;MetaTime=06;TimeBase=2025-02-12 06:00:00.0;TimeStep=144;Duration=40781;HostId=123456;HostLogin=login;HostAddress=my.host.it;TransferProtocol=sftp;MoverName=my.mover.name.it;UserId=uid;RequestAddress=X.X.X.X;DataOnlyDuration=40189;StandBy=false;RemoteHost=my.remote.host.it"  # noqa: E501
UPH_LINE = "UPH;Monitored=false;DataTransferId=123456789;DestinationName=MyDestination;DestinationType=Gold;FileName=/my/home/datafile.bin;FileSize=131259312;MetaStream=GENFO;MetaType=EF;MetaTime=00;Priority=69;QueueTime=2025-02-13 06:53:10.0;RequeueCount=0;ScheduledTime=2025-02-13 06:53:10.0;StartTime=2025-02-13 09:00:53.139;PutTime=2025-02-13 09:00:56.015;Duration=16471;DurationOnClose=18534;BytesSent=131259312;StatusCode=DONE;RetrievalTime=2025-02-13 05:42:01.694;TimeBase=2025-02-13 00:00:00.0;TimeStep=79;FinishTime=2025-02-13 09:01:14.584;TransferProtocol=sftp;TransferServer=my.mover.name.it;NetworkCode=Internet;HostAddress=my.host.it;PreSchedule=false;ProxyHost=X.X.X.X;Proxied=true;SocketStatistics=start:1739437253611 end:1739437274560 0 0 [::ffff:X.X.X.X]:47699 [::ffff:X.X.X.X]:22 timer:(keepalive,119min,0) ino:760715359 sk:32bcfe cgroup:/ inet-sockopt: ( is_icsk mc_loop) sack cubic wscale:8,7 rto:411 rtt:210.21/10.545 ato:40 mss:1374 pmtu:1500 rcvmss:1374 advmss:1460 cwnd:3215 bytes_sent:131602845 bytes_acked:131602846 bytes_received:437502 segs_out:97675 segs_in:19212 data_segs_out:96883 data_segs_in:3763 send:168114172bps lastsnd:1866 lastrcv:8 lastack:8 pacing_rate:336228136bps delivery_rate:85580864bps delivered:96884 app_limited busy:18696ms rwnd_limited:6989ms(37.4%) reordering:6 rcv_rtt:1053.2 rcv_space:37632 rcv_ssthresh:296449 minrtt:203.539 snd_wnd:2598144;Compressed=-;CompressedOnTheFly=false"  # noqa: E501
INH_LINE = "INH;Monitored=true;DataTransferId=123456789;DestinationName=MyDestination;DestinationType=Gold;FileName=/my/home/datafile.bin;FileSize=162392;ScheduledTime=2025-02-13 07:41:00.0;StartTime=2025-02-13 09:05:32.616;MetaStream=GENFO-GTS;MetaType=EP;MetaTime=00;TimeBase=2025-02-13 00:00:00.0;TimeStep=240;Duration=1;UserId=uid;CountryCode=uk;UserDescription=User description;BytesSent=162392;TransferProtocol=ftp;TransferServer=my.mover.name.it;HostAddress=my.host.it;Caller=/my/home/datafile.output;ExpiryTime=2025-03-15 07:41:00.0;FileSystem=20;Action=download"  # noqa: E501
ERR_LINE = "ERR;Monitored=false;DataTransferId=123456789;DestinationName=MyDestination;DestinationType=Gold;FileName=/my/home/datafile.bin;FileSize=35850;ScheduledTime=2025-02-11 06:04:20.0;StartTime=2025-02-11 09:46:35.586;MetaStream=GOPER;MetaType=FC;MetaTime=00;TimeBase=2025-02-11 00:00:00.0;TimeStep=64;Duration=0;UserId=uid;CountryCode=fr;BytesSent=0;TransferProtocol=sftp;TransferServer=my.mover.name.it;HostAddress=my.host.it;Message=Module sftp error <- Failed to connect to X.X.X.X:22 (SSH_MSG_DISCONNECT: 11 Too many bad authentication attempts!) (Trying from DataMover=my.mover.name.it)"  # noqa: E501
CPY_LINE = "CPY;Monitored=true;DataTransferId=123456789;DestinationName=MyDestination;DestinationType=Gold;FileName=/my/home/datafile.bin;FileSize=196445574;ScheduledTime=2025-02-13 08:07:46.13;StartTime=2025-02-13 08:07:51.022;MetaStream=-;MetaType=-;MetaTime=00;TimeBase=2025-02-13 00:00:00.0;TimeStep=-1;Duration=1040;CountryCode=ec;Target=my.target.mover.name.it;TransferServer=my.source.mover.name.it;Caller=/my/home/datafile.output;ExpiryTime=2025-02-15 08:07:46.13;FileSystem=18;Status=true;Message=-;Action=replicate"  # noqa: E501

SOCKET_STATISTICS = UPH_LINE.split(";SocketStatistics=", 1)[1].split(";", 1)[0]
SFTP_ERROR = (
    "Module sftp error <- Failed to connect to X.X.X.X:22 (SSH_MSG_DISCONNECT: 11 Too many bad authentication"
    " attempts!) (Trying from DataMover=my.mover.name.it)"
)


def at(year, month, day, hour=0, minute=0, second=0, millisecond=0):
    return datetime(year, month, day, hour, minute, second, millisecond * 1000, tzinfo=UTC)


def keys(line):
    category, pairs = parse_line(line)
    return category, [key for key, _ in pairs]


# --- Golden lines ----------------------------------------------------------------------------------


def test_prs_renders_the_readme_line():
    event = ProductStatusEvent(
        status_code="EXEC",
        data_stream="GWAEF",
        time_step=144,
        time_base=at(2025, 2, 12, 6),
        type="EF",
        schedule_time=at(2025, 2, 12, 13, 4),
        last_update=at(2025, 2, 12, 12, 28, 44, 353),
    )
    assert event.render() == PRS_LINE
    assert str(event) == PRS_LINE


def test_ret_renders_the_readme_line():
    event = RetrievalEvent(
        monitored=True,
        data_transfer_id=123456789,
        destination_name="MyDestination",
        destination_type="Gold",
        file_name="/my/home/datafile.bin",
        file_size=9426076326,
        scheduled_time=at(2025, 2, 12, 13, 4),
        start_time=at(2025, 2, 12, 12, 29, 43, 980),
        meta_stream="GENFO",
        meta_type="EF",
        meta_time="06",
        time_base=at(2025, 2, 12, 6),
        time_step=144,
        duration=timedelta(milliseconds=40781),
        host_id="123456",
        host_login="login",
        host_address="my.host.it",
        transfer_protocol="sftp",
        mover_name="my.mover.name.it",
        user_id="uid",
        request_address="X.X.X.X",
        data_only_duration=40189,
        stand_by=False,
        remote_host="my.remote.host.it",
    )
    assert event.render() == RET_LINE


def test_ret_appends_status_and_message_only_when_the_retrieval_failed():
    failed = RetrievalEvent(data_transfer_id=1, status=False, message="no such file")
    assert failed.render().endswith(";RemoteHost=-;Status=false;Message=no such file")
    assert "Status=" not in RetrievalEvent(data_transfer_id=1).render()


def test_uph_renders_the_readme_line():
    event = UploadHistoryEvent(
        monitored=False,
        data_transfer_id=123456789,
        destination_name="MyDestination",
        destination_type="Gold",
        file_name="/my/home/datafile.bin",
        file_size=131259312,
        meta_stream="GENFO",
        meta_type="EF",
        meta_time="00",
        priority=69,
        queue_time=at(2025, 2, 13, 6, 53, 10),
        requeue_count=0,
        scheduled_time=at(2025, 2, 13, 6, 53, 10),
        start_time=at(2025, 2, 13, 9, 0, 53, 139),
        put_time=at(2025, 2, 13, 9, 0, 56, 15),
        duration=16471,
        duration_on_close=timedelta(milliseconds=18534),
        bytes_sent=131259312,
        status_code=TransferStatus.DONE,
        retrieval_time=at(2025, 2, 13, 5, 42, 1, 694),
        time_base=at(2025, 2, 13),
        time_step="79",
        finish_time=at(2025, 2, 13, 9, 1, 14, 584),
        transfer_protocol="sftp",
        transfer_server="my.mover.name.it",
        network_code="Internet",
        host_address="my.host.it",
        pre_schedule=False,
        proxy_host="X.X.X.X",
        proxied=True,
        socket_statistics=SOCKET_STATISTICS,
        compressed=None,
        compressed_on_the_fly=False,
    )
    assert event.render() == UPH_LINE


def test_inh_renders_the_readme_line():
    event = IncomingHistoryEvent(
        monitored=True,
        data_transfer_id=123456789,
        destination_name="MyDestination",
        destination_type="Gold",
        file_name="/my/home/datafile.bin",
        file_size=162392,
        scheduled_time=at(2025, 2, 13, 7, 41),
        start_time=at(2025, 2, 13, 9, 5, 32, 616),
        meta_stream="GENFO-GTS",
        meta_type="EP",
        meta_time="00",
        time_base=at(2025, 2, 13),
        time_step=240,
        duration=1,
        user_id="uid",
        country_code="uk",
        user_description="User description",
        bytes_sent=162392,
        transfer_protocol="ftp",
        transfer_server="my.mover.name.it",
        host_address="my.host.it",
        caller="/my/home/datafile.output",
        expiry_time=at(2025, 3, 15, 7, 41),
        file_system=20,
        action="download",
    )
    assert event.render() == INH_LINE


def test_err_renders_the_readme_line():
    event = ErrorEvent(
        monitored=False,
        data_transfer_id=123456789,
        destination_name="MyDestination",
        destination_type="Gold",
        file_name="/my/home/datafile.bin",
        file_size=35850,
        scheduled_time=at(2025, 2, 11, 6, 4, 20),
        start_time=at(2025, 2, 11, 9, 46, 35, 586),
        meta_stream="GOPER",
        meta_type="FC",
        meta_time="00",
        time_base=at(2025, 2, 11),
        time_step=64,
        duration=timedelta(0),
        user_id="uid",
        country_code="fr",
        bytes_sent=0,
        transfer_protocol="sftp",
        transfer_server="my.mover.name.it",
        host_address="my.host.it",
        message=SFTP_ERROR,
    )
    assert event.render() == ERR_LINE


def test_cpy_renders_the_readme_line():
    event = ReplicationEvent(
        monitored=True,
        data_transfer_id=123456789,
        destination_name="MyDestination",
        destination_type="Gold",
        file_name="/my/home/datafile.bin",
        file_size=196445574,
        scheduled_time=at(2025, 2, 13, 8, 7, 46, 130),
        start_time=at(2025, 2, 13, 8, 7, 51, 22),
        meta_stream=None,
        meta_type=None,
        meta_time="00",
        time_base=at(2025, 2, 13),
        time_step=-1,
        duration=1040,
        country_code="ec",
        target="my.target.mover.name.it",
        transfer_server="my.source.mover.name.it",
        caller="/my/home/datafile.output",
        expiry_time=at(2025, 2, 15, 8, 7, 46, 130),
        file_system=18,
        status=True,
        message=None,
        action="replicate",
    )
    assert event.render() == CPY_LINE


def test_every_field_of_a_record_is_missing_until_given():
    assert ProductStatusEvent().render() == (
        "PRS;StatusCode=-;DataStream=-;TimeStep=-;TimeBase=-;Type=-;ScheduleTime=-;LastUpdate=-"
    )


# --- Values ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(2025, 2, 13, 6, 53, 10), "2025-02-13 06:53:10.0"),
        (at(2025, 2, 13, 9, 0, 53, 139), "2025-02-13 09:00:53.139"),
        (at(2025, 2, 12, 12, 29, 43, 980), "2025-02-12 12:29:43.98"),
        (at(2025, 2, 13, 8, 7, 46, 100), "2025-02-13 08:07:46.1"),
        (at(2025, 2, 13, 8, 7, 46, 1), "2025-02-13 08:07:46.001"),
        (at(2025, 2, 13, 8, 7, 46, 10), "2025-02-13 08:07:46.01"),
        # Microseconds are truncated to the millisecond OpenECPDS keeps, never rounded up.
        (datetime(2025, 2, 13, 8, 7, 46, 999_999, tzinfo=UTC), "2025-02-13 08:07:46.999"),
        (datetime(2025, 2, 13, 8, 7, 46, 999, tzinfo=UTC), "2025-02-13 08:07:46.0"),
        # Other zones are rendered in UTC; naive times are taken as UTC.
        (datetime(2025, 2, 13, 1, 0, tzinfo=UTC).astimezone(), "2025-02-13 01:00:00.0"),
        (datetime(2025, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))), "2025-01-01 00:00:00.0"),
        (datetime(2025, 12, 31, 23, 59, 59, 500_000), "2025-12-31 23:59:59.5"),
    ],
)
def test_timestamps_render_like_java_timestamps_in_utc(moment, expected):
    assert format_timestamp(moment) == expected


def test_durations_render_in_milliseconds():
    assert format_duration(timedelta(seconds=40, milliseconds=781)) == "40781"
    assert format_duration(timedelta(microseconds=999)) == "0"
    assert format_duration(16471) == "16471"


def test_a_message_cannot_break_the_line():
    message = "Module sftp error;\r\nline two\nkey=value;end\u2028after"
    line = ErrorEvent(data_transfer_id=7, message=message).render()
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    category, pairs = parse_line(line)
    assert category == "ERR"
    assert pairs[-1] == ("Message", "Module sftp error, line two key=value,end after")
    assert [key for key, _ in pairs] == keys(ERR_LINE)[1]


def test_an_empty_value_renders_as_missing():
    assert clean_value("") == "-"
    assert ReplicationEvent(message="").render().endswith(";Message=-;Action=-")


# --- Writer ----------------------------------------------------------------------------------------


def test_the_log_appends_whole_lines_from_many_threads(tmp_path):
    path = tmp_path / "logs" / "events" / "pds.log"
    threads, per_thread = 8, 200
    expected = set()
    log = EventLog.open(str(path))
    assert log.enabled

    def write(worker):
        for n in range(per_thread):
            log.write(ErrorEvent(data_transfer_id=worker * 10_000 + n, message=f"worker {worker} " + "x" * 5000))

    for worker in range(threads):
        expected.update(
            ErrorEvent(data_transfer_id=worker * 10_000 + n, message=f"worker {worker} " + "x" * 5000).render()
            for n in range(per_thread)
        )
    running = [threading.Thread(target=write, args=(w,)) for w in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()
    log.close()

    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    assert len(lines) - 1 == threads * per_thread
    assert set(lines[:-1]) == expected

    with EventLog.open(path) as again:  # appends, never truncates
        again.write(PRS_EVENT)
    assert path.read_text(encoding="utf-8").splitlines()[-1] == PRS_LINE
    assert len(path.read_text(encoding="utf-8").splitlines()) == threads * per_thread + 1


def test_each_line_is_on_disk_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / "events.log"
    log = EventLog.open(str(path))
    log.write(PRS_EVENT)
    assert path.read_text(encoding="utf-8") == PRS_LINE + "\n"  # before close
    log.close()
    log.write(PRS_EVENT)  # a closed log drops lines instead of failing the transfer
    assert path.read_text(encoding="utf-8") == PRS_LINE + "\n"


def test_dash_writes_to_standard_output(capsys):
    log = EventLog.open("-")
    log.write(PRS_EVENT)
    log.close()  # never closes standard output
    assert capsys.readouterr().out == PRS_LINE + "\n"
    assert not sys.stdout.closed


@pytest.mark.parametrize("target", [None, ""])
def test_no_target_turns_the_log_off(target, capsys):
    log = EventLog.open(target)
    assert not log.enabled
    log.write(PRS_EVENT)
    assert capsys.readouterr().out == ""


PRS_EVENT = ProductStatusEvent(
    status_code="EXEC",
    data_stream="GWAEF",
    time_step=144,
    time_base=at(2025, 2, 12, 6),
    type="EF",
    schedule_time=at(2025, 2, 12, 13, 4),
    last_update=at(2025, 2, 12, 12, 28, 44, 353),
)


# --- From the catalog's entities ---------------------------------------------------------------------


@pytest.fixture
def entities():
    data_file = DataFile(
        id=5,
        name="datafile.bin",
        size=131259312,
        md5="0" * 32,
        stream="GENFO",
        data_type="EF",
        time_base="2025-02-13T00:00:00+00:00",
        time_step="79",
        arrived_at=at(2025, 2, 13, 5, 42, 1, 694),
    )
    transfer = DataTransfer(
        id=123456789,
        data_file_id=5,
        destination_name="MyDestination",
        target="/my/home/datafile.bin",
        status=TransferStatus.DONE,
        priority=69,
        queued_at=at(2025, 2, 13, 6, 53, 10),
        scheduled_at=at(2025, 2, 13, 6, 53, 10),
        expires_at=at(2025, 3, 15, 7, 41),
        started_at=at(2025, 2, 13, 9, 0, 53, 139),
        finished_at=at(2025, 2, 13, 9, 1, 14, 584),
        mover="my.mover.name.it",
        bytes_sent=131259312,
        host_name="site-host",
    )
    destination = Destination(name="MyDestination")
    host = Host(name="site-host", protocol="sftp", address="my.host.it", login="login")
    return transfer, data_file, destination, host


def test_uph_from_the_catalog_keeps_the_readme_fields_and_order(entities):
    transfer, data_file, destination, host = entities
    line = uph_from(transfer, data_file, destination, host, put_time=at(2025, 2, 13, 9, 0, 56, 15)).render()
    assert keys(line) == keys(UPH_LINE)
    values = dict(parse_line(line)[1])
    assert values["DataTransferId"] == "123456789"
    assert values["FileName"] == "/my/home/datafile.bin"
    assert values["MetaStream"] == "GENFO"
    assert values["MetaTime"] == "00"
    assert values["TimeBase"] == "2025-02-13 00:00:00.0"
    assert values["TimeStep"] == "79"
    assert values["StatusCode"] == "DONE"
    assert values["Duration"] == values["DurationOnClose"] == "21445"
    assert values["RetrievalTime"] == "2025-02-13 05:42:01.694"
    assert values["TransferServer"] == "my.mover.name.it"
    assert values["HostAddress"] == "my.host.it"
    assert values["TransferProtocol"] == "sftp"
    assert values["Monitored"] == "false"
    assert values["DestinationType"] == values["SocketStatistics"] == values["Compressed"] == "-"
    assert values["CompressedOnTheFly"] == "false"


def test_uph_from_names_the_compression_applied_on_the_fly(entities):
    transfer, data_file, destination, host = entities
    transfer.compression = "gzip"
    values = dict(parse_line(uph_from(transfer, data_file, destination, host).render())[1])
    assert values["Compressed"] == "gzip"
    assert values["CompressedOnTheFly"] == "true"


def test_err_from_the_catalog_keeps_the_readme_fields_and_order(entities):
    transfer, data_file, destination, host = entities
    transfer.status, transfer.error = TransferStatus.REQUEUED, "connection refused;\nretrying"
    line = err_from(transfer, data_file, destination, host).render()
    assert keys(line) == keys(ERR_LINE)
    assert dict(parse_line(line)[1])["Message"] == "connection refused, retrying"
    no_host = err_from(transfer, data_file, destination, None, message="no active host").render()
    assert keys(no_host) == keys(ERR_LINE)
    assert dict(parse_line(no_host)[1])["HostAddress"] == "-"


def test_ret_from_the_catalog_keeps_the_readme_fields_and_order(entities):
    transfer, data_file, destination, host = entities
    data_file.time_base, data_file.meta = "2025-02-12T06:00:00Z", {}
    transfer.status = TransferStatus.STANDBY
    line = ret_from(transfer, data_file, destination, host, duration=40781, user_id="uid").render()
    assert keys(line) == keys(RET_LINE)
    values = dict(parse_line(line)[1])
    assert values["MetaTime"] == "06"
    assert values["HostId"] == "site-host"
    assert values["HostLogin"] == "login"
    assert values["StandBy"] == "true"
    assert values["RemoteHost"] == "my.host.it"
    failed = ret_from(transfer, data_file, destination, host, error="No such file").render()
    assert keys(failed)[1] == [*keys(RET_LINE)[1], "Status", "Message"]
    assert failed.endswith(";Status=false;Message=No such file")


def test_inh_from_the_catalog_keeps_the_readme_fields_and_order(entities):
    transfer, data_file, destination, _host = entities
    data_file.meta = {"time": "12"}
    line = inh_from(
        transfer,
        data_file,
        destination,
        action="upload",
        transfer_protocol="https",
        transfer_server="api",
        client_address="10.0.0.1",
        user_id="provider",
        duration=timedelta(seconds=2),
    ).render()
    assert keys(line) == keys(INH_LINE)
    values = dict(parse_line(line)[1])
    assert values["MetaTime"] == "12"
    assert values["BytesSent"] == "131259312"
    assert values["ExpiryTime"] == "2025-03-15 07:41:00.0"
    assert values["Duration"] == "2000"
    assert values["Action"] == "upload"


def test_cpy_from_the_catalog_keeps_the_readme_fields_and_order(entities):
    transfer, data_file, destination, _host = entities
    line = cpy_from(
        transfer, data_file, destination, source="store", target="replica-s3", ok=False, message="timeout"
    ).render()
    assert keys(line) == keys(CPY_LINE)
    values = dict(parse_line(line)[1])
    assert (values["TransferServer"], values["Target"]) == ("store", "replica-s3")
    assert (values["Status"], values["Message"], values["Action"]) == ("false", "timeout", "replicate")


def test_prs_from_the_catalog_keeps_the_readme_fields_and_order(entities):
    _transfer, data_file, _destination, _host = entities
    data_file.time_base = "not a time"
    line = prs_from(data_file, status_code="DONE", last_update=at(2025, 2, 13, 9)).render()
    assert keys(line) == keys(PRS_LINE)
    values = dict(parse_line(line)[1])
    assert values["TimeBase"] == "not a time"  # kept as given when it is not a time
    assert values["DataStream"] == "GENFO"
    assert values["Type"] == "EF"


def test_a_format_and_its_record_cannot_drift_apart(monkeypatch):
    from catalog import events

    events._check_records()  # as at import
    monkeypatch.setitem(events.FORMATS, "ERR", (*events.FORMATS["ERR"], "NetworkCode"))
    with pytest.raises(TypeError, match="ErrorEvent.*network_code"):
        events._check_records()


def test_every_format_is_declared_once_with_unique_keys():
    from catalog.events import FORMATS, RECORDS

    assert sorted(FORMATS) == sorted(r.CATEGORY for r in RECORDS) == ["CPY", "ERR", "INH", "PRS", "RET", "UPH"]
    for category, keys in FORMATS.items():
        assert len(set(keys)) == len(keys), category
