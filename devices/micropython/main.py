# Runs at boot on the board: joins Wi-Fi, then serves the word count's
# mapper (ROLE = "worker") or calls config.TASK once (ROLE = "requester").
import config
import swarmq_device


def mapper(word):
    """The original word-count mapper."""
    return [word, 1] if len(word) >= 5 else None


def main():
    print("address", swarmq_device.wifi(config.WIFI_SSID, config.WIFI_PASSWORD))
    if config.ROLE == "requester":
        import requester
        answer = requester.call(config, config.QUEUE, config.TASK, config.ARGS)
        print("result", answer.get("status"), answer.get("result", answer.get("error")))
    else:
        import worker
        worker.serve(config, {"mapper": mapper}, getattr(config, "MAX_TASKS", 0))


main()
