# Settings of this board: edit and copy to the board with main.py.
WIFI_SSID = "my-network"
WIFI_PASSWORD = "my-wifi-password"
BROKER = "192.168.1.10"      # the swarmq broker's address
PORT = 1883
USERNAME = None              # identity name, e.g. "esp32-kitchen" (swarmq identity add …)
PASSWORD = None              # its token (sqt_…)
ROLE = "worker"              # "worker": serve QUEUE; "requester": call TASK(ARGS) once
QUEUE = "word_count"
TASK = "mapper"
ARGS = ["Fables"]
